"""The Prometheus page's text: any model name a client sends (the request counter carries it)
reads back as itself with the exposition format's own parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from servo.metrics import ServerMetrics


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
