#!/usr/bin/env python3
"""Writes servo's example model repository (default `examples/models/`) from scratch.

The demo, the docs and the benchmarks serve these models; the directory is git-ignored, so a
fresh clone runs this script (nothing else is needed). Every model is built from code with
fixed weights or a fixed seed, so that two runs write the same models.

Models (one function each; `MODELS` lists them):
- `half_plus_two/1`, `half_plus_two/2`: TensorFlow SavedModels like TFS's test model,
  y = x/2 + 2, with `serving_default` (x: float [-1, 1] -> y) and the Example-based
  `classify_x_to_y` and `regress_x_to_y` (feature "x"). Version 2 is a model of its own,
  exported separately, computing the same function from differently stored weights
  (a = 1/2 as 0.25 * 2), so that clients see no change when versions switch.
- `whitespace_tokenizer/1`: a TF2 SavedModel using TF Text's whitespace tokenizer (op
  `TFText>WhitespaceTokenizeWithOffsetsV2`), written where tensorflow-text is installed
  (the `text` extra): "text" (string [-1]) -> "tokens" (string [-1, -1], each text's words padded
  with "" to the longest) and "lengths" (int64 [-1], words per text).
- `decision_forest/1`: a random forest (10 trees) trained by YDF on a fixed seed and exported
  as a SavedModel using TensorFlow Decision Forests' inference ops, written where ydf-tf is
  installed (the `decision-forests` extra): "x1", "x2" (float [-1]) -> "output" (float [-1], the
  probability that x1 + x2 > 1, as the forest learnt it). The forest is the same on every run;
  the prefix of its asset files' names is random, as YDF's export chooses it.
- `mlp/1/model.onnx`: ONNX MLP, 16 float inputs -> 64 ReLU units -> 4 outputs ("x" [-1, 16] ->
  "y" [-1, 4]).
- `mlp_large/1/model.onnx`: ONNX MLP, 512 -> 4 x 2048 ReLU -> 10 (about 54 MB of float32
  weights), for batching benchmarks.
- `vocab/1/vocab.txt`: a lookup table (platform `lookup`): word -> id, unknown words -> -1.
- `word_count/1/model.py`: a Python servable (platform `python`): text -> words and characters.
- `vocab_classifier/1/model.onnx`: an ONNX text classifier that `vocab` feeds: "ids" (int64
  [-1, -1], a batch of word ids, -1 for an unknown word) -> "scores" [-1, 3], the softmax of
  a linear layer over the sum of the words' vectors (id 0, `<pad>`, has a zero vector, so
  padding changes nothing; any negative id is an unknown word; ids beyond the vocabulary are
  refused by ONNX Runtime).
- `text_classifier_pipeline/1/pipeline.json` (platform `pipeline`): `vocab` then
  `vocab_classifier`, two served models: "text" (words, [-1, -1]) -> "ids" and "scores".
- `text_classifier_composite/1/` (platform `composite`): the same two models as parts of one
  version directory (`vocab/`, `model/` and `composite.json`), answering exactly what the
  pipeline answers.
- `embeddings/1/embeddings.tsv`: an embedding table (platform `lookup`), 4096 keys `item-0000`
  ... `item-4095` -> 16 floats from a fixed seed; unknown keys -> zeros.
- `embeddings_shards/shard-{0,1,2}/1/`: that table split into 3 shards (binary tables) by
  servo's own split code (`servo split-table`), each for a servo of its own (model name
  `embeddings`, platform `lookup`).
- `embeddings_sharded/1/sharded.json` (platform `sharded`): the front that joins the shards,
  listing their gRPC addresses 127.0.0.1:8610, :8611 and :8612 (`SHARD_GRPC_PORTS`).
  `make serve-sharded` (scripts/serve_sharded.py) starts the shards and the front.
- `models.config`: a TFS model config file (protobuf text format) serving all of the above
  but the shards and their front (which need servers of their own), with absolute base paths,
  as TFS requires, each pipeline after its steps (a pipeline loads when its steps serve).

Each model's directory is written next to its final place and then swapped in, so a rerun
replaces exactly the models it writes and leaves anything else in the output directory alone.

To add a model: write `def write_<name>(model_dir: Path) -> None` that creates the model's
base directory contents (version subdirectories) under `model_dir`, and append an
`ExampleModel` to `MODELS` (after the models it names, if any); set `needs_tensorflow=True`
when it imports TensorFlow, `needs=(module, extra)` when it needs a package beyond that (it is
skipped, with a note, where the module does not import), `in_config=False` when `make serve`
must not serve it.

Usage: python scripts/make_example_models.py [OUTPUT_DIR] [--skip-tensorflow] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "examples" / "models"

MLP_SEED = 20240611
MLP_LARGE_SEED = 20240612
CLASSIFIER_SEED = 20240613
EMBEDDINGS_SEED = 20240614
DECISION_FOREST_SEED = 20240615
ONNX_OPSET = 17  # widely supported by ONNX Runtime releases; the ops used here are old
ONNX_IR_VERSION = 8


# -- TensorFlow models -----------------------------------------------------------------------


def _write_half_plus_two_version(version_dir: Path, a_stored: float, a_scale: float) -> None:
    """A TF1-style SavedModel computing y = (a_stored * a_scale) * x + 2, with TFS's
    half_plus_two signatures. TFS serves SavedModels through a v1 session; so does servo."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        a = v1.Variable(np.float32(a_stored), name="a")
        b = v1.Variable(np.float32(2.0), name="b")
        # serving_default: a float batch [-1, 1].
        x = v1.placeholder(tf.float32, shape=[None, 1], name="x")
        y = tf.add(tf.multiply(a * np.float32(a_scale), x), b, name="y")
        # classify / regress: serialized tf.Examples with a float feature "x".
        examples = v1.placeholder(tf.string, name="tf_example")
        parsed = v1.io.parse_example(examples, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        y_examples = tf.add(tf.multiply(a * np.float32(a_scale), parsed["x"]), b, name="y_ex")

        def info(t: tf.Tensor) -> object:
            return v1.saved_model.utils.build_tensor_info(t)

        predict = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"x": info(x)},
            outputs={"y": info(y)},
            method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        )
        classify = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"inputs": info(examples)},
            outputs={"scores": info(y_examples)},
            method_name=v1.saved_model.signature_constants.CLASSIFY_METHOD_NAME,
        )
        regress = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"inputs": info(examples)},
            outputs={"outputs": info(y_examples)},
            method_name=v1.saved_model.signature_constants.REGRESS_METHOD_NAME,
        )
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(version_dir))
            builder.add_meta_graph_and_variables(
                session,
                [v1.saved_model.tag_constants.SERVING],
                signature_def_map={
                    "serving_default": predict,
                    "classify_x_to_y": classify,
                    "regress_x_to_y": regress,
                },
                strip_default_attrs=True,
            )
            builder.save()


def write_half_plus_two(model_dir: Path) -> None:
    """half_plus_two/1 and /2: y = x/2 + 2."""
    _write_half_plus_two_version(model_dir / "1", a_stored=0.5, a_scale=1.0)
    _write_half_plus_two_version(model_dir / "2", a_stored=0.25, a_scale=2.0)


def write_whitespace_tokenizer(model_dir: Path) -> None:
    """whitespace_tokenizer/1: TF Text's WhitespaceTokenizer, its ragged tokens made dense (servo
    serves dense tensors), exported as TF2 exports models (tf.saved_model.save)."""
    import tensorflow as tf
    import tensorflow_text as text

    class Tokenizer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self._tokenizer = text.WhitespaceTokenizer()

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def tokenize(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
            tokens = self._tokenizer.tokenize(texts)
            return {"tokens": tokens.to_tensor(default_value=""), "lengths": tokens.row_lengths()}

    module = Tokenizer()
    signatures = {"serving_default": module.tokenize}
    tf.saved_model.save(module, str(model_dir / "1"), signatures=signatures)


def write_decision_forest(model_dir: Path) -> None:
    """decision_forest/1: a small random forest on x1 + x2 > 1, exported by YDF (with ydf-tf) as
    TF-DF exported its models."""
    import ydf

    rng = np.random.default_rng(DECISION_FOREST_SEED)
    x1 = rng.uniform(0, 1, 400).astype(np.float32)
    x2 = rng.uniform(0, 1, 400).astype(np.float32)
    data = {"x1": x1, "x2": x2, "label": (x1 + x2 > 1).astype(np.int64)}
    learner = ydf.RandomForestLearner(
        label="label", num_trees=10, max_depth=5, random_seed=DECISION_FOREST_SEED
    )
    forest = learner.train(data, verbose=0)
    forest.to_tensorflow_saved_model(str(model_dir / "1"), mode="tf")


# -- ONNX models -----------------------------------------------------------------------------


def mlp_model(
    widths: Sequence[int], seed: int, *, input_name: str = "x", output_name: str = "y"
) -> object:
    """An ONNX MLP: Gemm layers of the given widths (inputs first, outputs last), ReLU between
    them, He-initialised weights from a fixed seed and small biases, batch dim symbolic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = []
    initializers = []
    current = input_name
    layers = len(widths) - 1
    for i in range(layers):
        fan_in, fan_out = widths[i], widths[i + 1]
        weight = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"w{i}"))
        initializers.append(numpy_helper.from_array(bias, f"b{i}"))
        last = i == layers - 1
        gemm_out = output_name if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [gemm_out]))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [f"r{i}"]))
            current = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", widths[0]])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", widths[-1]])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="servo-examples",
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
    )
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model


def _save_onnx(model: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())  # type: ignore[attr-defined]


def write_mlp(model_dir: Path) -> None:
    """mlp/1/model.onnx: 16 -> 64 (ReLU) -> 4."""
    _save_onnx(mlp_model([16, 64, 4], MLP_SEED), model_dir / "1" / "model.onnx")


def write_mlp_large(model_dir: Path) -> None:
    """mlp_large/1/model.onnx: 512 -> 2048 x 4 (ReLU) -> 10."""
    widths = [512, 2048, 2048, 2048, 2048, 10]
    _save_onnx(mlp_model(widths, MLP_LARGE_SEED), model_dir / "1" / "model.onnx")


CLASSIFIER_CLASSES = 3
CLASSIFIER_DIM = 8


def classifier_model(vocab_size: int, seed: int) -> object:
    """An ONNX bag-of-words classifier: ids [batch, words] (int64; -1, or any negative id, an
    unknown word) -> scores [batch, classes], softmax(sum of the words' vectors @ w + b). The
    vectors' table has a row for the unknown word first (ids are shifted by one), and a zero
    row for id 0, the padding word; ids beyond the vocabulary are refused by ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((vocab_size + 1, CLASSIFIER_DIM)).astype(np.float32)
    vectors[1] = 0.0  # id 0, <pad>
    weight = rng.standard_normal((CLASSIFIER_DIM, CLASSIFIER_CLASSES)).astype(np.float32)
    bias = (rng.standard_normal(CLASSIFIER_CLASSES) * 0.1).astype(np.float32)
    initializers = [
        numpy_helper.from_array(np.array(-1, np.int64), "unknown"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "word_axis"),
        numpy_helper.from_array(vectors, "vectors"),
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(bias, "b"),
    ]
    nodes = [
        helper.make_node("Max", ["ids", "unknown"], ["known"]),  # not Gather's from-the-end
        helper.make_node("Add", ["known", "one"], ["rows"]),
        helper.make_node("Gather", ["vectors", "rows"], ["words"]),
        helper.make_node("ReduceSum", ["words", "word_axis"], ["bag"], keepdims=0),
        helper.make_node("Gemm", ["bag", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "vocab_classifier",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "words"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", CLASSIFIER_CLASSES])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="servo-examples",
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
    )
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_vocab_classifier(model_dir: Path) -> None:
    """vocab_classifier/1/model.onnx: the vocabulary's ids -> 3 class scores."""
    _save_onnx(classifier_model(len(VOCAB), CLASSIFIER_SEED), model_dir / "1" / "model.onnx")


# -- models that need no ML runtime -----------------------------------------------------------

VOCAB = ["<pad>", "the", "a", "model", "server", "serves", "tensor", "version", "servo", "flow"]

WORD_COUNT = '''"""Counts the words and characters of each text (an example Python servable)."""

import numpy as np


class Model:
    signatures = {
        "serving_default": {
            "inputs": {"text": {"dtype": "string", "shape": [-1]}},
            "outputs": {
                "words": {"dtype": "int64", "shape": [-1]},
                "chars": {"dtype": "int64", "shape": [-1]},
            },
        }
    }

    def predict(self, inputs, signature_name):
        texts = [t.decode("utf-8", "replace") for t in inputs["text"].ravel()]
        shape = inputs["text"].shape
        return {
            "words": np.array([len(t.split()) for t in texts], np.int64).reshape(shape),
            "chars": np.array([len(t) for t in texts], np.int64).reshape(shape),
        }
'''


def _write_vocab_table(directory: Path) -> None:
    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (directory / "lookup.json").write_text('{"default_value": -1, "default_key": "<unk>"}\n')


def write_vocab(model_dir: Path) -> None:
    _write_vocab_table(model_dir / "1")


def write_word_count(model_dir: Path) -> None:
    version = model_dir / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(WORD_COUNT, encoding="utf-8")


# -- composite models ------------------------------------------------------------------------

# The steps of the text classifier, as a pipeline of served models and as a composite's parts.
TEXT_CLASSIFIER_OUTPUTS = {"ids": "ids.ids", "scores": "classes.scores"}
TEXT_CLASSIFIER_PIPELINE = {
    "steps": [
        {"name": "ids", "model": "vocab", "inputs": {"keys": "request.text"}},
        {"name": "classes", "model": "vocab_classifier", "inputs": {"ids": "ids.ids"}},
    ],
    "outputs": TEXT_CLASSIFIER_OUTPUTS,
}
TEXT_CLASSIFIER_COMPOSITE = {
    "parts": {
        "vocab": {"platform": "lookup", "path": "vocab"},
        "classifier": {"platform": "onnx", "path": "model"},
    },
    "steps": [
        {"name": "ids", "part": "vocab", "inputs": {"keys": "request.text"}},
        {"name": "classes", "part": "classifier", "inputs": {"ids": "ids.ids"}},
    ],
    "outputs": TEXT_CLASSIFIER_OUTPUTS,
}


def _write_json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def write_text_classifier_pipeline(model_dir: Path) -> None:
    """text_classifier_pipeline/1/pipeline.json: vocab -> vocab_classifier."""
    _write_json(model_dir / "1" / "pipeline.json", TEXT_CLASSIFIER_PIPELINE)


def write_text_classifier_composite(model_dir: Path) -> None:
    """text_classifier_composite/1/: vocab/ and model/ (the classifier) and composite.json."""
    version = model_dir / "1"
    _write_vocab_table(version / "vocab")
    _save_onnx(classifier_model(len(VOCAB), CLASSIFIER_SEED), version / "model" / "model.onnx")
    _write_json(version / "composite.json", TEXT_CLASSIFIER_COMPOSITE)


# -- a sharded embedding table ---------------------------------------------------------------

EMBEDDING_KEYS = 4096
EMBEDDING_DIM = 16
SHARD_COUNT = 3
SHARD_GRPC_PORTS = (8610, 8611, 8612)  # the front's default shard addresses, on 127.0.0.1
TABLE_MODEL = "embeddings"  # the table's model name, whole or on each shard server


def embedding_key(i: int) -> str:
    return f"item-{i:04d}"


def _write_embeddings_table(directory: Path) -> None:
    rng = np.random.default_rng(EMBEDDINGS_SEED)
    values = rng.standard_normal((EMBEDDING_KEYS, EMBEDDING_DIM))
    directory.mkdir(parents=True)
    rows = (
        f"{embedding_key(i)}\t{' '.join(f'{v:.4f}' for v in row)}\n"
        for i, row in enumerate(values.tolist())
    )
    (directory / "embeddings.tsv").write_text("".join(rows), encoding="utf-8")


def write_embeddings(model_dir: Path) -> None:
    """embeddings/1/embeddings.tsv: 4096 keys -> 16 floats."""
    _write_embeddings_table(model_dir / "1")


def write_embeddings_shards(model_dir: Path) -> None:
    """embeddings_shards/shard-<i>/1/: the embeddings table split into 3 by servo split-table's
    code, from a copy of the table written beside them (the same bytes as `embeddings`')."""
    from servo.cli.split_table import split

    with tempfile.TemporaryDirectory(dir=model_dir) as scratch:
        table = Path(scratch) / TABLE_MODEL / "1"
        _write_embeddings_table(table)
        with contextlib.redirect_stderr(io.StringIO()):  # its lines name the staging directory
            split(str(table), SHARD_COUNT, str(model_dir))


def write_embeddings_sharded(model_dir: Path) -> None:
    """embeddings_sharded/1/sharded.json: the front of the 3 shards on 127.0.0.1."""
    shards = [f"127.0.0.1:{port}" for port in SHARD_GRPC_PORTS]
    _write_json(model_dir / "1" / "sharded.json", {"model": TABLE_MODEL, "shards": shards})


# -- the repository --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExampleModel:
    name: str  # the model's directory under the output directory, and its model name
    write: Callable[[Path], None]  # writes the version directories under the path it gets
    needs_tensorflow: bool = False
    needs: tuple[str, str] | None = None  # (module, servo extra) it needs beyond TensorFlow
    platform: str = "onnx"  # model_platform in models.config
    in_config: bool = True  # served by models.config (`make serve`)


MODELS: list[ExampleModel] = [
    ExampleModel(
        "half_plus_two", write_half_plus_two, needs_tensorflow=True, platform="tensorflow"
    ),
    ExampleModel(
        "whitespace_tokenizer",
        write_whitespace_tokenizer,
        needs_tensorflow=True,
        needs=("tensorflow_text", "text"),
        platform="tensorflow",
    ),
    ExampleModel(
        "decision_forest",
        write_decision_forest,
        needs_tensorflow=True,
        needs=("ydf_tf", "decision-forests"),
        platform="tensorflow",
    ),
    ExampleModel("mlp", write_mlp),
    ExampleModel("mlp_large", write_mlp_large),
    ExampleModel("vocab", write_vocab, platform="lookup"),
    ExampleModel("word_count", write_word_count, platform="python"),
    ExampleModel("vocab_classifier", write_vocab_classifier),
    # Pipelines after their steps: a pipeline's version loads once its steps serve.
    ExampleModel("text_classifier_pipeline", write_text_classifier_pipeline, platform="pipeline"),
    ExampleModel(
        "text_classifier_composite", write_text_classifier_composite, platform="composite"
    ),
    ExampleModel("embeddings", write_embeddings, platform="lookup"),
    # Not one model but the base directories of the shard servers' model (`embeddings`).
    ExampleModel("embeddings_shards", write_embeddings_shards, platform="lookup", in_config=False),
    ExampleModel(
        "embeddings_sharded", write_embeddings_sharded, platform="sharded", in_config=False
    ),
]

CONFIG_FILE = "models.config"


def write_config(output: Path) -> Path:
    """Writes `models.config` for every known model present under `output` that `make serve`
    serves (`in_config`) and that can load here (a model written when the package it `needs`
    was installed is left out once it is not)."""
    entries = []
    for model in MODELS:
        loadable = model.needs is None or importable(model.needs[0])
        if model.in_config and loadable and (output / model.name).is_dir():
            entries.append(
                "  config {\n"
                f'    name: "{model.name}"\n'
                f'    base_path: "{(output / model.name).resolve()}"\n'
                f'    model_platform: "{model.platform}"\n'
                "  }\n"
            )
    path = output / CONFIG_FILE
    path.write_text("model_config_list {\n" + "".join(entries) + "}\n", encoding="utf-8")
    return path


def write_model(model: ExampleModel, output: Path) -> Path:
    """Writes `model` to `output/<name>`, replacing what was there; returns that path."""
    output.mkdir(parents=True, exist_ok=True)
    final = output / model.name
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=output))
    staging.chmod(0o755)  # mkdtemp makes it private; a server may run as another user
    try:
        model.write(staging)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{model.name}.old.", dir=output))
            os.replace(final, old / model.name)
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def tensorflow_available() -> bool:
    return importable("tensorflow")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "output", nargs="?", type=Path, default=DEFAULT_OUTPUT, help="default: examples/models"
    )
    parser.add_argument(
        "--skip-tensorflow",
        action="store_true",
        help="skip the models that need TensorFlow (for machines without it)",
    )
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="write only these models (repeatable)"
    )
    args = parser.parse_args(argv)

    chosen = MODELS
    if args.only:
        known = {m.name for m in MODELS}
        unknown = sorted(set(args.only) - known)
        if unknown:
            parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
        chosen = [m for m in MODELS if m.name in args.only]
    if args.skip_tensorflow:
        chosen = [m for m in chosen if not m.needs_tensorflow]
    elif any(m.needs_tensorflow for m in chosen) and not tensorflow_available():
        print(
            "TensorFlow is not installed; install it "
            "(pip install 'servo-model-server[tensorflow]') or pass --skip-tensorflow",
            file=sys.stderr,
        )
        return 2
    for model in chosen:
        if model.needs is not None and not importable(model.needs[0]):
            print(
                f"skipped {model.name}: it needs {model.needs[0]}, which is not installed "
                f"(pip install 'servo-model-server[{model.needs[1]}]')"
            )
            continue
        path = write_model(model, args.output)
        print(f"wrote {path}")
    if chosen:
        print(f"wrote {write_config(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
