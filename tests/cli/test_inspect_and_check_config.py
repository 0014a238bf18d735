"""`servo inspect DIR` and `servo check-config FILE`: what a model directory and a config hold,
told without a server; every problem at once, one a line, exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servo.cli.main import main
from tests.support.examples import example_script

Capture = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("examples")
    assert example_script().main([str(out), "--skip-tensorflow"]) == 0
    return out


def test_inspect_prints_an_onnx_models_signatures(examples: Path, capsys: Capture) -> None:
    assert main(["inspect", str(examples / "mlp")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Model directory {examples / 'mlp'}: versions 1\n")
    assert "Version 1: platform onnx\n  signature_def['serving_default']:\n" in out
    assert "    method name: tensorflow/serving/predict\n" in out
    assert "      x: DT_FLOAT shape (-1, 16) (x)\n" in out
    assert "      y: DT_FLOAT shape (-1, 4) (y)\n" in out


@pytest.mark.parametrize(
    ("model", "platform", "signature"),
    [
        ("vocab", "lookup", "ids_to_keys"),
        ("word_count", "python", "serving_default"),
        ("text_classifier_composite", "composite", "serving_default"),
    ],
)
def test_inspect_json_for_every_loadable_platform(
    examples: Path, model: str, platform: str, signature: str, capsys: Capture
) -> None:
    assert main(["inspect", "--json", str(examples / model)]) == 0
    version = json.loads(capsys.readouterr().out)["versions"]["1"]
    assert version["platform"] == platform
    assert signature in version["signatures"]


def test_inspect_a_pipeline_and_a_sharded_front_prints_their_structure(
    examples: Path, capsys: Capture
) -> None:
    assert main(["inspect", str(examples / "text_classifier_pipeline")]) == 0
    out = capsys.readouterr().out
    assert "(a pipeline runs other served models: its declared steps, not loaded)" in out
    assert "step 'ids': model vocab, signature serving_default; inputs: keys <- request.text" in out
    assert main(["inspect", "--json", str(examples / "embeddings_sharded")]) == 0
    front = json.loads(capsys.readouterr().out)["versions"]["1"]
    assert front["platform"] == "sharded" and len(front["shards"]) == 3


def test_inspect_errors_are_one_line_and_exit_1(
    examples: Path, tmp_path: Path, capsys: Capture
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd" / "3").mkdir(parents=True)
    (tmp_path / "odd" / "3" / "weights.bin").write_bytes(b"")
    cases = {
        str(tmp_path / "none"): f"{tmp_path / 'none'} is not a directory",
        str(tmp_path / "empty"): f"No versions found under {tmp_path / 'empty'}",
        str(examples / "mlp" / "1"): "(it holds the files of a onnx model itself",
        str(tmp_path / "odd"): "Version 3 at",
    }
    for path, message in cases.items():
        assert main(["inspect", path]) == 1
        err = capsys.readouterr().err
        assert err.startswith("servo inspect: ") and message in err and err.count("\n") == 1


def test_check_config_passes_the_examples_config(examples: Path, capsys: Capture) -> None:
    config = examples / "models.config"
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{config}: OK, ") and "mlp (onnx)" in out and out.count("\n") == 1


def test_check_config_reports_every_problem(tmp_path: Path, capsys: Capture) -> None:
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "a" base_path: "{tmp_path}/missing" model_platform: "onnx" }}\n'
        '  config { name: "a" base_path: "relative" model_platform: "caffe" }\n'
        f'  config {{ base_path: "{tmp_path}" model_platform: "onnx"'
        '    version_labels { key: "stable" value: -1 } }\n'
        "}\n"
    )
    assert main(["check-config", str(config)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert [line.removeprefix(f"{config}: ") for line in lines] == [
        "Illegal to list model a multiple times in config list",
        "Expected model a to have an absolute path or URI; got base_path()=relative",
        "Model a requests unsupported platform caffe; servo serves: composite, lookup, onnx, "
        "pipeline, python, sharded, tensorflow, tflite",
        "A model config entry has no name",
        "Model : label 'stable' has negative version",
        f"Model a: base_path {tmp_path}/missing is not a directory",
        "6 problems",
    ]


def test_check_config_reports_a_parse_error_with_its_line_and_column(
    tmp_path: Path, capsys: Capture
) -> None:
    config = tmp_path / "models.config"
    config.write_text('model_config_list {\n  config { name: "a" bogus: 1 }\n}\n')
    assert main(["check-config", str(config)]) == 1
    assert capsys.readouterr().err == (
        f"{config}: Error parsing text-format tensorflow.serving.ModelServerConfig: 2:27: "
        'Message type "tensorflow.serving.ModelConfig" has no field named "bogus".\n'
        f"{config}: 1 problem\n"
    )
    assert main(["check-config", str(tmp_path / "absent.config")]) == 1
    assert "Cannot read" in capsys.readouterr().err
