"""Server metrics with TFS's names, exposed in Prometheus's text format.

TFS names a metric by its path with every character outside `[a-zA-Z0-9_]` turned into `:`
(`/tensorflow/serving/request_count` -> `:tensorflow:serving:request_count`); counters carry no
`_total` suffix; latencies are histograms in microseconds with TFS's buckets (10 x 1.8^i, 33
buckets). servo adds its own metrics, named `servo_*`, for model loads and states, failed
polls of base paths and config files (`servo_storage_poll_errors`), and the copies of
versions in object storage (`servo_model_downloads`, `servo_model_download_bytes`).

Each metric also keeps its TensorFlow monitoring name (`path`, the name before the
Prometheus rewrite; servo's own metrics have one name), the name `ReloadConfigRequest.
metric_names` uses: `int64_values` reads metrics as TFS's HandleReloadConfigRequest does.

Recording is a dictionary update under a lock, cheap enough for the request path. The page is
written here in TFS's exporter format rather than by prometheus_client, because that library
always names a counter `<name>_total` and TFS's counters have no such suffix: scrapers and
dashboards written for TFS look for the exact names. Each server has its own `ServerMetrics`
(no process globals), made by the command line.

Where TFS records a family, servo records it where it does the same thing: example counts per
classify/regress/multi-inference request, request-log writes, batch queue entries and batch
runs, SavedModel loads (TensorFlow's loader counts; `model_path` is the directory loaded). TFS
has no count of warm-up records (it logs it): `servo_model_warmup_records_read` is servo's.
"""

from __future__ import annotations

import bisect
import operator
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

from servo.core.event_bus import EventBus, Subscription
from servo.core.servable_state import ManagerState, ServableState
from servo.core.status import Code


def tfs_name(path: str) -> str:
    """TFS's Prometheus name for a metric path."""
    name = "".join(c if c.isalnum() or c == "_" else ":" for c in path)
    return "_" + name if name[:1].isdigit() else name


def exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """TFS's `Buckets::Exponential`: `count` upper bounds `scale * growth**i` (the last
    bucket, to infinity, is implied)."""
    return tuple(scale * growth**i for i in range(count))


LATENCY_BUCKETS = exponential_buckets(10, 1.8, 33)


class _Family:
    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], path: str | None = None
    ) -> None:
        self.name = name
        self.path = path or name  # the TensorFlow monitoring name (metric_names say it)
        self.documentation = documentation
        self.labels = tuple(labels)
        self._lock = threading.Lock()

    def render(self, lines: list[str]) -> None:
        """Appends the family's lines of the Prometheus text page to `lines`."""
        raise NotImplementedError

    def points(self) -> list[list[Any]]:
        """The family's points, `[label values, value]` each, as JSON can carry them (a
        histogram's value is its cells: the count in each bucket, then the sum)."""
        raise NotImplementedError

    def merge(self, points: Iterable[Sequence[Any]]) -> None:
        """Adds another process's `points` of the same family into this one's (counters and
        histograms summed, a gauge's largest value kept)."""
        raise NotImplementedError

    @classmethod
    def tfs(cls, path: str, documentation: str, labels: Sequence[str], *args: Any) -> Self:
        """The metric TFS names `path`, under its Prometheus name."""
        return cls(tfs_name(path), documentation, labels, *args, path=path)  # type: ignore[misc]

    def first_int64(self) -> int:
        """What TFS's reload handler reads of a metric: the int64 value of its first point
        (TensorFlow keeps a metric's cells ordered by their label values, so the first is
        the smallest label tuple); 0 without points, and for a metric whose points are not
        int64 (histograms, double gauges)."""
        return 0


class _Scalar(_Family):
    """A family with one number per label values (a counter's, a gauge's); another
    process's points merge in through `_combine`."""

    _combine: Callable[[float, float], float]

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], path: str | None = None
    ) -> None:
        super().__init__(name, documentation, labels, path)
        self._values: dict[tuple[str, ...], float] = {}

    def points(self) -> list[list[Any]]:
        with self._lock:
            return [[list(k), v] for k, v in self._values.items()]

    def merge(self, points: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            for labels, value in points:
                key = tuple(labels)
                mine = self._values.get(key)
                self._values[key] = value if mine is None else self._combine(mine, value)


class Counter(_Scalar):
    """A monotonic count per label values."""

    _combine = staticmethod(operator.add)

    def inc(self, *labels: str, amount: float = 1) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0)

    def first_int64(self) -> int:
        with self._lock:
            return int(self._values[min(self._values)]) if self._values else 0

    def render(self, lines: list[str]) -> None:
        lines.append(f"# TYPE {self.name} counter")
        with self._lock:
            items = list(self._values.items())
        for values, count in items:
            lines.append(f"{self.name}{{{_labels(self.labels, values)}}} {_number(count)}")


class Gauge(_Scalar):
    """A value per label values that goes up and down; `integer` for an int64 gauge (whose
    value a reload's metric_names can read), otherwise a double gauge. Merged, the largest
    value is kept."""

    _combine = staticmethod(max)

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        path: str | None = None,
        *,
        integer: bool = False,
    ) -> None:
        super().__init__(name, documentation, labels, path)
        self.integer = integer

    def set(self, value: float, *labels: str) -> None:
        with self._lock:
            self._values[labels] = value

    def remove(self, *labels: str) -> None:
        with self._lock:
            self._values.pop(labels, None)

    def value(self, *labels: str) -> float | None:
        return self._values.get(labels)

    def first_int64(self) -> int:
        if not self.integer:
            return 0
        with self._lock:
            return int(self._values[min(self._values)]) if self._values else 0

    def render(self, lines: list[str]) -> None:
        lines.append(f"# TYPE {self.name} gauge")
        with self._lock:
            items = list(self._values.items())
        for values, value in items:
            lines.append(f"{self.name}{{{_labels(self.labels, values)}}} {_number(value)}")


class Histogram(_Family):
    """Counts of observations per bucket, their sum and count, per label values."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        buckets: Sequence[float] = LATENCY_BUCKETS,
        path: str | None = None,
    ) -> None:
        super().__init__(name, documentation, labels, path)
        self.buckets = tuple(buckets)
        # Per label values: [count in each bucket (the last is +Inf)..., sum]
        self._values: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, *labels: str) -> None:
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            cells = self._values.get(labels)
            if cells is None:
                cells = self._values[labels] = [0] * (len(self.buckets) + 2)
            cells[index] += 1
            cells[-1] += value

    def count(self, *labels: str) -> int:
        cells = self._values.get(labels)
        return 0 if cells is None else int(sum(cells[:-1]))

    def points(self) -> list[list[Any]]:
        with self._lock:
            return [[list(k), list(v)] for k, v in self._values.items()]

    def merge(self, points: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            for labels, cells in points:
                key = tuple(labels)
                mine = self._values.get(key)
                if mine is None:
                    self._values[key] = list(cells)
                elif len(mine) == len(cells):
                    self._values[key] = [a + b for a, b in zip(mine, cells, strict=True)]

    def render(self, lines: list[str]) -> None:
        lines.append(f"# TYPE {self.name} histogram")
        with self._lock:
            items = [(k, list(v)) for k, v in self._values.items()]
        bounds = [*(_number(b) for b in self.buckets), "+Inf"]
        for values, cells in items:
            labels = _labels(self.labels, values)
            prefix = f"{self.name}_bucket{{{labels}{',' if labels else ''}le="
            cumulative = 0
            for bound, count in zip(bounds, cells[:-1], strict=True):
                cumulative += int(count)
                lines.append(f'{prefix}"{bound}"}} {cumulative}')
            lines.append(f"{self.name}_sum{{{labels}}} {_number(cells[-1])}")
            lines.append(f"{self.name}_count{{{labels}}} {cumulative}")


# The exposition format's escapes in a label value: backslash, double quote, line feed.
_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(
        f'{n}="{v.translate(_LABEL_ESCAPES)}"' for n, v in zip(names, values, strict=True)
    )


def _number(value: float) -> str:
    """As TFS writes numbers: integers whole, others with six significant digits."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}"


class ServerMetrics:
    """Every metric a servo server records."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.request_count = Counter.tfs(
            "/tensorflow/serving/request_count",
            "The total number of requests.",
            ("model_name", "status"),
        )
        self.request_latency = Histogram.tfs(
            "/tensorflow/serving/request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
        )
        self.runtime_latency = Histogram.tfs(
            "/tensorflow/serving/runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"),
        )
        self.request_example_count_total = Counter.tfs(
            "/tensorflow/serving/request_example_count_total",
            "The total number of tensorflow.Examples.",
            ("model",),
        )
        self.model_warmup_latency = Histogram.tfs(
            "/tensorflow/serving/model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ("model_path", "status"),
            exponential_buckets(10, 1.8, 33),
        )
        self.model_load_latency = Histogram(
            "servo_model_load_latency_microseconds",
            "Wall time of loading a model version, from the start of its load (LOADING, the "
            "loader's first load call) to AVAILABLE or END, retries included.",
            ("model_name", "status"),
        )
        self.model_load_queue_latency = Histogram(
            "servo_model_load_queue_latency_microseconds",
            "Wall time a model version waited before its load started, from START (aspired) "
            "to LOADING: for a load thread, or for resources that unloads give back.",
            ("model_name",),
        )
        self.model_version_state = Gauge(
            "servo_model_version_state",
            "State of each model version the server knows: 10 START, 20 LOADING, "
            "30 AVAILABLE, 40 UNLOADING, 50 END.",
            ("model_name", "version"),
            integer=True,
        )
        self.model_load_count = Counter(
            "servo_model_load_count",
            "Loads of model versions that ended, by model and outcome (OK, or the error code).",
            ("model_name", "status"),
        )
        self.storage_poll_errors = Counter(
            "servo_storage_poll_errors",
            "Polls of a model base path or of --model_config_file that failed (the path "
            "missing, a store unreachable or refusing), by path and error code.",
            ("path", "code"),
        )
        self.model_downloads = Counter(
            "servo_model_downloads",
            "Versions in object storage fetched into the local cache, by outcome: "
            "downloaded, reused (a complete copy from an earlier run) or an error code.",
            ("model_name", "outcome"),
        )
        self.model_download_bytes = Counter(
            "servo_model_download_bytes",
            "Bytes downloaded from object storage into the local cache.",
            ("model_name",),
        )
        self.batching_queuing_latency = Histogram.tfs(
            "/tensorflow/serving/batching_session/queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ("thread_pool_name",),
            exponential_buckets(100, 1.2, 52),
        )
        self.batch_size = Histogram.tfs(
            "/tensorflow/serving/batching/batch_size",
            "Tracks the batch size distribution on processing by model_name (if available).",
            ("model_name", "op_name"),
            exponential_buckets(1, 2, 14),
        )
        self.padding_size = Histogram.tfs(
            "/tensorflow/serving/batching/padding_size",
            "Tracks the padding size distribution on batches by model_name (if available).",
            ("model_name", "execution_batch_size"),
            exponential_buckets(1, 2, 14),
        )
        self._clock = clock
        self._aspired_since: dict[tuple[str, int], float] = {}
        # Issue 16: the rest of TFS's families (and TensorFlow's SavedModel loader's).
        self.request_example_counts = Histogram.tfs(
            "/tensorflow/serving/request_example_counts",
            "Examples in each classify, regress or multi-inference request.",
            ("model",),
            exponential_buckets(1, 2, 15),
        )
        self.request_log_count = Counter.tfs(
            "/tensorflow/serving/request_log_count",
            "Requests sampled into a request log, by model and the outcome of writing them.",
            ("model_name", "status_code"),
        )
        self.batching_wrapped_run_count = Counter.tfs(
            "/tensorflow/serving/batching_session/wrapped_run_count",
            "Runs of a batch on the wrapped model.",
            (),
        )
        self.batching_input_batch_size = Histogram.tfs(
            "/tensorflow/serving/batching_session/input_batch_size",
            "Size (dim 0) of each input tensor of a request entering a batch queue.",
            (),
            exponential_buckets(1, 2, 14),
        )
        self.batching_processed_batch_size = Histogram.tfs(
            "/tensorflow/serving/batching_session/processed_batch_size",
            "Size of each batch run, padding included.",
            (),
            exponential_buckets(1, 2, 14),
        )
        self.saved_model_load_attempt_count = Counter.tfs(
            "/tensorflow/cc/saved_model/load_attempt_count",
            "Attempts to load a SavedModel, by export directory and outcome (success, fail).",
            ("model_path", "status"),
        )
        self.saved_model_load_latency = Counter.tfs(
            "/tensorflow/cc/saved_model/load_latency",
            "Microseconds spent loading SavedModels (every attempt), by export directory.",
            ("model_path",),
        )
        self.model_warmup_records_read = Counter(
            "servo_model_warmup_records_read",
            "Warm-up records read from a version's tf_serving_warmup_requests, by version "
            "directory (TFS only logs this number).",
            ("model_path",),
        )
        self._loading_since: dict[tuple[str, int], float] = {}
        self._subscription: Subscription | None = None

    def families(self) -> list[_Family]:
        return [v for v in vars(self).values() if isinstance(v, _Family)]

    def int64_values(self, names: Iterable[str]) -> dict[str, int]:
        """Each named metric's value as TFS's HandleReloadConfigRequest reads it (by its
        TensorFlow monitoring name: `/tensorflow/serving/request_count`,
        `servo_model_load_count`): its first point's int64 value (`_Family.first_int64`),
        0 for a name no metric has. A name given twice is read once."""
        by_path = {family.path: family for family in self.families()}
        values: dict[str, int] = {}
        for name in names:
            if name not in values:
                family = by_path.get(name)
                values[name] = 0 if family is None else family.first_int64()
        return values

    def render(self) -> bytes:
        """The Prometheus text page."""
        lines: list[str] = []
        for family in self.families():
            family.render(lines)
        return ("\n".join(lines) + "\n").encode()

    def snapshot(self) -> dict[str, list[list[Any]]]:
        """Every family's points by its name (`_Family.points`), for another process to
        merge into its page (`render_merged`)."""
        return {family.name: family.points() for family in self.families()}

    def render_merged(self, others: Iterable[dict[str, list[list[Any]]]]) -> bytes:
        """The page of this server's metrics and other processes' `snapshot`s together, as
        one process would have recorded them all: counters and histograms summed, a gauge's
        largest value (for servo_model_version_state: the state furthest along in any)."""
        total = ServerMetrics()
        families = {family.name: family for family in total.families()}
        for snapshot in (self.snapshot(), *others):
            for name, points in snapshot.items():
                family = families.get(name)
                if family is not None:
                    family.merge(points)
        return total.render()

    def poll_error(self, path: str, code: Code) -> None:
        self.storage_poll_errors.inc(path, code.name)

    def saved_model_load(self, model_path: str, ok: bool, micros: float) -> None:
        """One SavedModel load attempt, as TensorFlow's LoadSavedModel counts it."""
        self.saved_model_load_attempt_count.inc(model_path, "success" if ok else "fail")
        self.saved_model_load_latency.inc(model_path, amount=int(micros))

    def download(self, model_name: str, outcome: str, nbytes: int) -> None:
        self.model_downloads.inc(model_name, outcome)
        if nbytes:
            self.model_download_bytes.inc(model_name, amount=nbytes)

    # -- model states, from the event bus --------------------------------------------------

    def watch(self, bus: EventBus[ServableState]) -> None:
        self._subscription = bus.subscribe(self._on_state)

    def _on_state(self, event: ServableState) -> None:
        name, version = event.id.name, event.id.version
        key = (name, version)
        state = event.manager_state
        self.model_version_state.set(float(state), name, str(version))
        now = self._clock()
        if state == ManagerState.START:
            self._aspired_since[key] = now
        elif state == ManagerState.LOADING:
            if key not in self._loading_since:  # not a retry's LOADING: the load starts
                self._loading_since[key] = now
                aspired = self._aspired_since.pop(key, None)
                if aspired is not None:
                    self.model_load_queue_latency.observe((now - aspired) * 1e6, name)
        elif state in (ManagerState.AVAILABLE, ManagerState.END):
            self._aspired_since.pop(key, None)
            started = self._loading_since.pop(key, None)
            if started is not None:
                status = "OK" if event.health.ok else event.health.code.name
                self.model_load_latency.observe((now - started) * 1e6, name, status)
                self.model_load_count.inc(name, status)
