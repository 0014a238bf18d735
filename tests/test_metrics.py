"""The Prometheus page's text: any model name a client sends (the request counter carries it)
reads back as itself with the exposition format's own parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from servo.metrics import Counter, Histogram, ServerMetrics, tfs_name


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=20))
def test_label_values_are_escaped_as_the_exposition_format_says(name: str) -> None:
    metrics = ServerMetrics()
    metrics.request_count.inc(name, "OK")
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    (sample,) = [s for f in families.values() for s in f.samples if s.labels.get("model_name")]
    assert sample.labels["model_name"] == name


def test_a_line_feed_in_a_label_value_stays_in_its_line() -> None:
    metrics = ServerMetrics()
    metrics.request_count.inc('a\n"b\\', "OK")
    assert 'model_name="a\\n\\"b\\\\"' in metrics.render().decode()


# -- what a reload's metric_names read (TFS's HandleReloadConfigRequest) ---------------------


def test_a_metric_is_read_by_its_tensorflow_name_as_its_first_points_int64() -> None:
    """TFS reads `points[0]->int64_value` of the named metric: TensorFlow keeps a metric's
    cells ordered by label values, so the first is the smallest label tuple."""
    metrics = ServerMetrics()
    assert metrics.request_count.path == "/tensorflow/serving/request_count"
    assert metrics.request_count.name == ":tensorflow:serving:request_count"
    metrics.request_count.inc("m", "OK", amount=3)
    metrics.request_count.inc("b", "OK", amount=5)
    metrics.request_count.inc("b", "INVALID_ARGUMENT", amount=7)  # ("b", "I...") < ("b", "O...")
    metrics.model_load_count.inc("z", "OK")
    metrics.model_version_state.set(30.0, "a", "1")
    metrics.request_latency.observe(12.0, "m", "predict", "GRPC")
    values = metrics.int64_values(
        [
            "/tensorflow/serving/request_count",
            "servo_model_load_count",
            "servo_model_version_state",  # an int64 gauge
            "/tensorflow/serving/request_latency",  # a histogram: no int64 value
            ":tensorflow:serving:request_count",  # the Prometheus name is no metric name
            "nope",
            "servo_model_load_count",  # twice: read once
        ]
    )
    assert values == {
        "/tensorflow/serving/request_count": 7,
        "servo_model_load_count": 1,
        "servo_model_version_state": 30,
        "/tensorflow/serving/request_latency": 0,
        ":tensorflow:serving:request_count": 0,
        "nope": 0,
    }
    assert list(values) == [
        "/tensorflow/serving/request_count",
        "servo_model_load_count",
        "servo_model_version_state",
        "/tensorflow/serving/request_latency",
        ":tensorflow:serving:request_count",
        "nope",
    ]


def test_a_metric_without_points_reads_0() -> None:
    metrics = ServerMetrics()
    assert metrics.int64_values(["/tensorflow/serving/request_count"]) == {
        "/tensorflow/serving/request_count": 0
    }
    assert metrics.int64_values([]) == {}


def test_every_metric_has_a_distinct_tensorflow_name() -> None:
    paths = [family.path for family in ServerMetrics().families()]
    assert len(paths) == len(set(paths))
    prefixes = ("/tensorflow/serving/", "/tensorflow/cc/saved_model/", "servo_")
    assert all(p.startswith(prefixes) for p in paths)


def test_each_load_that_ends_is_counted_by_model_and_outcome() -> None:
    from servo.core.event_bus import EventBus
    from servo.core.servable_id import ServableId
    from servo.core.servable_state import ManagerState, ServableState
    from servo.core.status import Code, Status

    metrics = ServerMetrics()
    bus: EventBus[ServableState] = EventBus()
    metrics.watch(bus)
    ok, bad = ServableId("m", 1), ServableId("m", 2)
    for id, end, health in [
        (ok, ManagerState.AVAILABLE, Status()),
        (bad, ManagerState.END, Status(Code.NOT_FOUND, "gone")),
    ]:
        bus.publish(ServableState(id, ManagerState.START))
        bus.publish(ServableState(id, ManagerState.LOADING))
        bus.publish(ServableState(id, end, health))
    bus.publish(ServableState(ok, ManagerState.UNLOADING))  # an unload is no load
    bus.publish(ServableState(ok, ManagerState.END))
    assert metrics.model_load_count.value("m", "OK") == 1
    assert metrics.model_load_count.value("m", "NOT_FOUND") == 1
    assert metrics.int64_values(["servo_model_load_count"]) == {"servo_model_load_count": 1}


def test_load_latency_starts_at_the_load_and_the_queue_time_is_its_own_metric() -> None:
    """The user's case: 4.52 s from START to AVAILABLE, 0.154 s of it loading."""
    from servo.core.event_bus import EventBus
    from servo.core.servable_id import ServableId
    from servo.core.servable_state import ManagerState, ServableState
    from servo.core.status import Code, Status

    now = [100.0]
    metrics = ServerMetrics(clock=lambda: now[0])
    bus: EventBus[ServableState] = EventBus()
    metrics.watch(bus)
    id = ServableId("m", 123)
    for at, state, health in [
        (100.0, ManagerState.START, Status()),  # aspired; waits for the load thread
        (104.366, ManagerState.LOADING, Status()),  # the load starts
        (104.4, ManagerState.LOADING, Status(Code.NOT_FOUND, "x (retry 1 of 5 in 0 s)")),
        (104.52, ManagerState.AVAILABLE, Status()),
    ]:
        now[0] = at
        bus.publish(ServableState(id, state, health))
    page = metrics.render().decode()
    assert 'servo_model_load_latency_microseconds_sum{model_name="m",status="OK"} 154000' in page
    assert 'servo_model_load_latency_microseconds_count{model_name="m",status="OK"} 1' in page
    assert 'servo_model_load_queue_latency_microseconds_sum{model_name="m"} 4366000' in page
    assert 'servo_model_load_queue_latency_microseconds_count{model_name="m"} 1' in page
    assert metrics.model_load_count.value("m", "OK") == 1  # a retry's LOADING is no new load

    # A version dropped before its load started is no queue time and no load.
    dropped = ServableId("m", 124)
    bus.publish(ServableState(dropped, ManagerState.START))
    bus.publish(ServableState(dropped, ManagerState.END))
    assert metrics.model_load_queue_latency.count("m") == 1
    assert metrics.model_load_count.value("m", "OK") == 1


def test_the_families_of_issue_16_have_tfs_names_labels_and_types() -> None:
    """Each as TFS (or TensorFlow's SavedModel loader) defines it: a Sampler is a histogram
    with its buckets, a Counter a counter; label names as there."""
    metrics = ServerMetrics()
    expected = {
        "/tensorflow/serving/request_example_counts": ("histogram", ("model",), 15, 1.0),
        "/tensorflow/serving/request_log_count": ("counter", ("model_name", "status_code")),
        "/tensorflow/serving/batching_session/wrapped_run_count": ("counter", ()),
        "/tensorflow/serving/batching_session/input_batch_size": ("histogram", (), 14, 1.0),
        "/tensorflow/serving/batching_session/processed_batch_size": ("histogram", (), 14, 1.0),
        "/tensorflow/cc/saved_model/load_attempt_count": ("counter", ("model_path", "status")),
        "/tensorflow/cc/saved_model/load_latency": ("counter", ("model_path",)),
        "servo_model_warmup_records_read": ("counter", ("model_path",)),
    }
    by_path = {family.path: family for family in metrics.families()}
    for path, (kind, labels, *buckets) in expected.items():
        family = by_path[path]
        assert family.labels == labels, path
        assert isinstance(family, Histogram if kind == "histogram" else Counter), path
        if buckets:
            count, first = buckets
            assert isinstance(family, Histogram)
            assert len(family.buckets) == count and family.buckets[0] == first
            assert family.buckets[-1] == 2 ** (count - 1)  # powers of 2
    # The page is valid exposition text with every one of them once recorded.
    metrics.request_example_counts.observe(3, "m")
    metrics.request_log_count.inc("m", "OK")
    metrics.batching_wrapped_run_count.inc()
    metrics.batching_input_batch_size.observe(2)
    metrics.batching_processed_batch_size.observe(4)
    metrics.saved_model_load("/models/m/1", True, 1234.5)
    metrics.model_warmup_records_read.inc("/models/m/1", amount=2)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    for path, (kind, *_) in expected.items():
        assert families[tfs_name(path)].type == kind, path
    assert metrics.int64_values(["/tensorflow/cc/saved_model/load_latency"]) == {
        "/tensorflow/cc/saved_model/load_latency": 1234
    }


# -- --workers: one page of every worker's metrics ----------------------------------------------


def test_the_merged_page_sums_counters_and_histograms_and_keeps_a_gauges_largest_value() -> None:
    import orjson

    mine, sibling = ServerMetrics(), ServerMetrics()
    mine.request_count.inc("m", "OK")
    sibling.request_count.inc("m", "OK", amount=2)
    sibling.request_count.inc("n", "INVALID_ARGUMENT")
    mine.request_latency.observe(100, "m", "predict", "REST")
    sibling.request_latency.observe(5000, "m", "predict", "REST")
    mine.model_version_state.set(20, "m", "1")
    sibling.model_version_state.set(30, "m", "1")
    # The sibling's snapshot travels as JSON, as between worker processes.
    page = mine.render_merged([orjson.loads(orjson.dumps(sibling.snapshot()))]).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(page)
        for s in f.samples
    }
    count = ":tensorflow:serving:request_count_total"  # the parser names counters so
    assert samples[(count, (("model_name", "m"), ("status", "OK")))] == 3
    assert samples[(count, (("model_name", "n"), ("status", "INVALID_ARGUMENT")))] == 1
    latency = ":tensorflow:serving:request_latency"
    labels = (("API", "predict"), ("entrypoint", "REST"), ("model_name", "m"))
    assert samples[(latency + "_count", labels)] == 2
    assert samples[(latency + "_sum", labels)] == 5100
    assert samples[(latency + "_bucket", (*labels[:2], ("le", "+Inf"), labels[2]))] == 2
    state = (("model_name", "m"), ("version", "1"))
    assert samples[("servo_model_version_state", state)] == 30
    # The page of one process alone is unchanged by merging nothing.
    assert mine.render_merged([]) == mine.render()
