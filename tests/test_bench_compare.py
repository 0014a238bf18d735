"""bench/compare.py's pure parts, without any peer installed and without running the bench:
the table and its Markdown, the answer check against ONNX Runtime on a tiny model's result,
the gRPC body h2load sends, h2load's output read, and the refusal of a busy port."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_compare", BENCH / "compare.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_compare"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def tiny_model(path: Path) -> Path:
    """An ONNX model y = x @ W (2 -> 3), written with onnx's helpers."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3) / 10, name="W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_answers_are_checked_against_onnx_runtime(compare: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = tiny_model(tmp_path / "tiny.onnx")
    rows = [[1.0, 2.0]]
    want = compare.expected(model, rows)
    assert np.allclose(want, [[0.6, 0.9, 1.2]])
    # A REST v2 answer as a server writes it: decoded, then compared.
    body = (
        b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 3],'
        b' "data": [0.6, 0.9, 1.2]}]}'
    )
    assert compare.wrong_answer(compare.decode_rest("REST v2", body), want) == ""
    tfs = b'{"predictions": [[0.6, 0.9, 1.3]]}'
    assert "is not ONNX Runtime's" in compare.wrong_answer(
        compare.decode_rest("REST tfs", tfs), want
    )
    assert "shape" in compare.wrong_answer(np.zeros((3,), np.float32), want)


def test_grpc_body_is_one_length_prefixed_message(compare: ModuleType) -> None:
    frame = compare.grpc_frame(b"abc")
    assert frame == b"\x00\x00\x00\x00\x03abc"


def test_h2load_output_is_read(compare: ModuleType) -> None:
    out = (
        "finished in 2.00s, 1500.50 req/s, 100KB/s\n"
        "requests: 3001 total, 3017 started, 3001 done, 3000 succeeded, 1 failed, 1 errored\n"
    )
    log = "".join(f"1700000000000000\t200\t{us}\n" for us in range(1000, 1100))
    result = compare.parse_h2load(out, log)
    assert result["rps"] == 1500.5
    assert result["errors"] == 1.0
    assert result["p50_ms"] == pytest.approx(1.05)
    assert result["p99_ms"] == pytest.approx(1.099)


def test_table_and_markdown(compare: ModuleType) -> None:
    servo = compare.Server("servo", [], [], [compare.Endpoint("REST tfs", "u")])
    peer = compare.Server("peer", [], [], [compare.Endpoint("REST tfs", "u")], note="a | b")
    down = compare.Server("down", [], [], [], skip="did not install")
    servo.peak_rss_mb, peer.peak_rss_mb = 100.0, 250.0
    run = {
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "cpu_s_per_1k": 0.1,
        "load_cpu_s_per_1k": 0.04,
        "busy": 0.975,
        "errors": 0.0,
        "requests": 1.0,
    }
    results = {
        ("servo", "REST tfs"): [{**run, "rps": r} for r in (900.0, 1000.0, 1100.0)],
        ("peer", "REST tfs"): [{**run, "rps": 250.0}],
    }
    rows = compare.summarize([servo, peer, down], results)
    assert [(r.server, r.rps, r.ratio) for r in rows] == [
        ("servo", 1000.0, 1.0),
        ("peer", 250.0, 0.25),
        ("down", None, None),
    ]
    text = compare.text_table(rows)
    assert "1,000" in text and "0.25" in text and "did not install" in text
    md = compare.markdown(rows, "title", "settings")
    lines = md.splitlines()
    assert lines[0] == "# title"
    assert lines[4].startswith("| server | protocol | req/s |")
    # rate, p50, p99, server CPU, load CPU, CPUs busy (97.5% rounds to 98), RSS, ratio, note
    peer = "| peer | REST tfs | 250 | 1.00 | 2.00 | 0.100 | 0.040 | 98 | 250 | 0.25 | a \\| b |"
    assert peer in md
    assert lines[5] == "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    assert "| down | - | - |" in md


def test_cpu_ticks_count_idle_and_iowait_as_not_busy(compare: ModuleType) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 3 0\nintr 12345\n"
    assert compare.cpu_ticks(stat) == (160, 1000)
    busy, total = compare.cpu_ticks()  # this machine's, since boot
    assert 0 < busy <= total


def test_children_cpu_counts_a_load_generator_that_ended(compare: ModuleType) -> None:
    before = compare.children_cpu_seconds()
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", spin], check=True)
    assert compare.children_cpu_seconds() - before >= 0.3


def test_busy_port_is_refused(compare: ModuleType) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(compare.PortBusy):
            compare.check_free(port)
        with pytest.raises(compare.PortBusy):
            compare.Ports(port).take()
    compare.check_free(port)  # closed: free again
