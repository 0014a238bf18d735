"""The command line: every `tensorflow_model_server` flag, with TFS's defaults, plus servo's.

Flags are written `--name=value` (or `--name value`); a boolean flag alone means true. An
unknown flag or a bad value is an error (exit code 2). Flags TFS has but that mean nothing
here (GPU, TPU, XLA, filesystem caches) are accepted so that TFS command lines work
unchanged; setting one logs that it has no effect.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from servo.apis.rest.http_server import (
    DEFAULT_CLOSE_LINGER_SECONDS,
    DEFAULT_MAX_BUFFERED_BODY_BYTES,
    DEFAULT_MAX_HEAD_BYTES,
    DEFAULT_MAX_PIPELINED,
    DEFAULT_MAX_READ_AHEAD_BYTES,
)
from servo.decoded_size import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TENSOR_BYTES
from servo.platforms.python import ISOLATIONS, THREAD
from servo.platforms.router import PLATFORMS
from servo.server.model_management import parse_roots
from servo.util.log_format import FORMATS as LOG_FORMATS

CPUS = os.cpu_count() or 1
# The gRPC port's bound on the request messages held at once (servo.apis.grpc.message_budget):
# about four messages of the default largest, as the REST bound holds sixteen bodies.
DEFAULT_GRPC_MAX_BUFFERED_MESSAGE_BYTES = 1024 * 1024 * 1024


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "t", "y"):
        return True
    if value in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_int64(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not -(2**63) <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{text} does not fit in int64")
    return value


def parse_int32(text: str) -> int:
    value = parse_int64(text)
    if not -(2**31) <= value < 2**31:
        raise argparse.ArgumentTypeError(f"{text} does not fit in int32")
    return value


def parse_port(text: str) -> int:
    value = parse_int32(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {value}")
    return value


def parse_byte_count(text: str) -> int:
    value = parse_int64(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of bytes, got {value}")
    return value


def parse_count(text: str) -> int:
    value = parse_int32(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def parse_budget(text: str) -> int:
    value = parse_int64(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (unlimited) or more bytes, got {value}")
    return value


@dataclass(frozen=True)
class PerModel:
    """A setting with a default and overrides by model name, written on the command line as
    `DEFAULT[,MODEL=VALUE...]`, e.g. `--max_concurrent_calls_per_model=8,slow=2`."""

    default: Any
    overrides: tuple[tuple[str, Any], ...] = ()

    def get(self, model_name: str) -> Any:
        for name, value in self.overrides:
            if name == model_name:
                return value
        return self.default


def per_model(parse: Callable[[str], Any]) -> Callable[[str], PerModel]:
    """A flag type: `parse` for the default and for each `MODEL=VALUE` override."""

    def parse_per_model(text: str) -> PerModel:
        default: Any = None
        overrides: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            name, sep, value = (x.strip() for x in part.rpartition("="))
            if not sep:
                if default is not None:
                    raise argparse.ArgumentTypeError(f"two defaults in {text!r}")
                default = parse(value)
            elif not name:
                raise argparse.ArgumentTypeError(f"no model name before '=' in {text!r}")
            else:
                overrides[name] = parse(value)
        if default is None:
            raise argparse.ArgumentTypeError(
                f"expected DEFAULT[,MODEL=VALUE...], got {text!r}: the default comes first"
            )
        return PerModel(default, tuple(overrides.items()))

    parse_per_model.__name__ = f"per_model_{getattr(parse, '__name__', 'value')}"
    return parse_per_model


def parse_positive_count(text: str) -> int:
    value = parse_int64(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {text!r}")
    return value


def parse_isolation(text: str) -> str:
    value = text.strip().lower()
    if value not in ISOLATIONS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(ISOLATIONS)}, got {text!r}")
    return value


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def parse_log_level(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return value


def parse_log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_FORMATS)}, got {text!r}")
    return value


def parse_tf_log_level(text: str) -> int | None:
    value = text.strip()
    if value == "":
        return None
    if value not in ("0", "1", "2", "3"):
        raise argparse.ArgumentTypeError(f"expected 0, 1, 2 or 3, got {text!r}")
    return int(value)


def parse_platform(text: str) -> str:
    if text and text not in PLATFORMS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(sorted(PLATFORMS))}, got {text!r}"
        )
    return text


def parse_platforms(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        parse_platform(name)
    return names


def parse_roots_flag(text: str) -> tuple[str, ...]:
    try:
        return parse_roots(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_marker(text: str) -> str:
    value = text.strip()
    if value and any(part in ("", ".", "..") for part in value.split("/")):
        raise argparse.ArgumentTypeError(
            f"expected an object name below the version, such as _SUCCESS, got {text!r}"
        )
    return value


def parse_model_roots_flag(text: str) -> tuple[str, ...]:
    """Directories and URL prefixes in object storage (s3://bucket/prefix, gs://...)."""
    try:
        return parse_roots(text, urls=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class Flag:
    name: str
    kind: Any  # parse function
    default: Any
    help: str
    effective: bool = True  # False: accepted for compatibility, no effect in servo


B, I32, I64, S, F = parse_bool, parse_int32, parse_int64, str, float

TFS_FLAGS: tuple[Flag, ...] = (
    Flag("port", parse_port, 8500, "Port for the gRPC API."),
    Flag("grpc_socket_path", S, "", "Also serve gRPC on this UNIX socket path."),
    Flag("rest_api_port", parse_port, 0, "Port for the HTTP/REST API; 0 turns it off."),
    Flag(
        "rest_api_num_threads",
        I32,
        4 * CPUS,
        "Each model version's default share of the model-call threads (see "
        "--max_concurrent_calls_per_model; capped at 4 per CPU and at an eighth of "
        "--max_model_call_threads).",
    ),
    Flag(
        "rest_api_timeout_in_ms",
        I64,
        30000,
        "Timeout of a REST request, in ms; 0 or less means no timeout (answer: 504).",
    ),
    Flag("rest_api_enable_cors_support", B, False, "Add CORS headers to REST answers."),
    Flag("enable_batching", B, False, "Batch requests on the server."),
    Flag(
        "allow_version_labels_for_unavailable_models",
        B,
        False,
        "Let new labels point at versions that are not available yet.",
    ),
    Flag("batching_parameters_file", S, "", "BatchingParameters, protobuf text format."),
    Flag(
        "enable_per_model_batching_parameters",
        B,
        False,
        "Read batching_params.pbtxt from each model version directory.",
    ),
    Flag(
        "model_config_file",
        S,
        "",
        "ModelServerConfig, protobuf text format (a local path, file://, s3:// or gs://, as "
        "every config file flag).",
    ),
    Flag(
        "model_config_file_poll_wait_seconds",
        I32,
        0,
        "Seconds between reads of --model_config_file; 0 reads it only at start.",
    ),
    Flag("model_name", S, "default", "Name of the model, without --model_config_file."),
    Flag(
        "model_base_path",
        S,
        "",
        "Base path of the model (local, file://, s3://bucket/prefix or gs://bucket/prefix), "
        "without --model_config_file.",
    ),
    Flag("num_load_threads", I32, 0, "Threads that load versions; 0 loads one at a time."),
    Flag("num_unload_threads", I32, 0, "Threads that unload versions; 0: one at a time."),
    Flag("max_num_load_retries", I32, 5, "Retries of a failed load."),
    Flag("load_retry_interval_micros", I64, 60_000_000, "Microseconds between load retries."),
    Flag(
        "file_system_poll_wait_seconds",
        I32,
        1,
        "Seconds between polls of model base paths; 0 polls once, < 0 never.",
    ),
    Flag("flush_filesystem_caches", B, True, "TFS-only; no effect.", effective=False),
    Flag(
        "tensorflow_session_parallelism",
        I64,
        0,
        "Threads of TensorFlow's and ONNX Runtime's op pools; 0 lets them choose.",
    ),
    Flag("tensorflow_session_config_file", S, "", "TFS-only; no effect.", effective=False),
    Flag("tensorflow_intra_op_parallelism", I64, 0, "Threads within one op; 0: runtime's choice."),
    Flag("tensorflow_inter_op_parallelism", I64, 0, "Ops run at once; 0: runtime's choice."),
    Flag("use_alts_credentials", B, False, "ALTS is not supported by servo.", effective=False),
    Flag("ssl_config_file", S, "", "SSLConfig for the gRPC API, protobuf text format."),
    Flag("platform_config_file", S, "", "TFS-only; no effect.", effective=False),
    Flag("per_process_gpu_memory_fraction", F, 0.0, "GPU-only; no effect.", effective=False),
    Flag("saved_model_tags", S, "serve", "Comma-separated MetaGraph tags to load."),
    Flag("grpc_channel_arguments", S, "", "Comma-separated key=value gRPC server arguments."),
    Flag(
        "grpc_max_threads",
        I32,
        4 * CPUS,
        "TFS's gRPC thread pool; servo's asyncio gRPC server needs none: no effect.",
        effective=False,
    ),
    Flag("enable_model_warmup", B, True, "Replay assets.extra/tf_serving_warmup_requests."),
    Flag("num_request_iterations_for_warmup", I32, 1, "Times each warm-up request is replayed."),
    Flag("version", B, False, "Print the version and exit."),
    Flag("monitoring_config_file", S, "", "MonitoringConfig, protobuf text format."),
    Flag(
        "remove_unused_fields_from_bundle_metagraph",
        B,
        True,
        "TFS-only; no effect.",
        effective=False,
    ),
    Flag(
        "prefer_tflite_model",
        B,
        False,
        "For tensorflow models, serve model.tflite when the version directory has one.",
    ),
    Flag("num_tflite_pools", I32, CPUS, "TF Lite interpreters = pools x per pool."),
    Flag("num_tflite_interpreters_per_pool", I32, 1, "TF Lite interpreters per pool."),
    Flag(
        "enable_signature_method_name_check",
        B,
        False,
        "Check signatures' method names: predict needs predict, classify or regress; classify "
        "and regress need their own.",
    ),
    Flag("xla_cpu_compilation_enabled", B, False, "TFS-only; no effect.", effective=False),
    Flag("xla_gpu_compilation_enabled", B, False, "GPU-only; no effect.", effective=False),
    Flag(
        "enable_profiler",
        B,
        True,
        "Serve tensorflow.ProfilerService on --port when TensorFlow is installed, so that "
        "TensorFlow's profiler clients (TensorBoard, tf.profiler.experimental.client.trace) "
        "capture traces of the TensorFlow models' runs.",
    ),
    Flag("thread_pool_factory_config_file", S, "", "TFS-only; no effect.", effective=False),
    Flag("mixed_precision", S, "", "TFS-only; no effect.", effective=False),
    Flag("skip_initialize_tpu", B, False, "TPU-only; no effect.", effective=False),
    Flag("enable_grpc_healthcheck_service", B, False, "Serve grpc.health.v1.Health."),
    Flag(
        "enable_serialization_as_tensor_content",
        B,
        False,
        "Write gRPC output tensors as tensor_content bytes instead of typed fields.",
    ),
)

SERVO_FLAGS: tuple[Flag, ...] = (
    Flag(
        "model_platform",
        parse_platform,
        "",
        f"Platform of --model_base_path's model ({', '.join(sorted(PLATFORMS))}); found "
        "from the version directory's files when empty.",
    ),
    Flag("bind_address", S, "0.0.0.0", "Address the gRPC and REST ports listen on."),
    Flag(
        "rest_api_max_body_bytes",
        parse_byte_count,
        64 * 2**20,
        "Largest REST request body accepted (after gzip decoding); larger ones get 413.",
    ),
    Flag(
        "total_model_memory_bytes",
        parse_budget,
        0,
        "RAM budget for loaded models (TFS's estimate: 1.2 x size on disk); 0 = unlimited. "
        "A version that does not fit ends with RESOURCE_EXHAUSTED.",
    ),
    Flag(
        "max_decoded_bytes_per_tensor",
        parse_byte_count,
        DEFAULT_MAX_TENSOR_BYTES,
        "Most bytes one request tensor (or a request's examples) may take once decoded, "
        "checked from its shape and dtype before anything is allocated; larger ones are "
        "INVALID_ARGUMENT (400).",
    ),
    Flag(
        "max_decoded_bytes_per_request",
        parse_byte_count,
        DEFAULT_MAX_REQUEST_BYTES,
        "Most bytes all of a request's tensors may take once decoded; more is "
        "INVALID_ARGUMENT (400). gRPC messages longer than this and 4 MiB are refused "
        "unread (RESOURCE_EXHAUSTED).",
    ),
    Flag(
        "python_model_isolation",
        per_model(parse_isolation),
        PerModel(THREAD),
        "Where python models run, DEFAULT[,MODEL=VALUE...]: thread (inside the server) or "
        "process (a worker process per version, one call at a time: a crash or a hung call "
        "of the model's code never stops the server), e.g. "
        "--python_model_isolation=thread,untrusted=process.",
    ),
    Flag("log_level", parse_log_level, "info", "debug, info, warning, error or critical."),
    Flag(
        "preload_platforms",
        parse_platforms,
        (),
        "Platforms whose runtimes are imported at start, before the ports open (e.g. "
        "tensorflow,onnx): importing TensorFlow into a running server holds the interpreter "
        "lock long enough to stall every request (a 508 ms stall was measured); a server "
        "that may be sent such models later should name them here.",
    ),
    Flag(
        "max_model_call_threads",
        parse_positive_count,
        256,
        "Threads that run model calls too long for the event loop, shared by every model; "
        "each version takes at most --max_concurrent_calls_per_model of them.",
    ),
    Flag(
        "max_concurrent_calls_per_model",
        per_model(parse_count),
        PerModel(0),
        "Model calls of one version that run at once, on threads of its own (calls too "
        "short to leave the event loop aside); 0 means --rest_api_num_threads (capped at 4 "
        "per CPU and an eighth of --max_model_call_threads). Per model: "
        "DEFAULT[,MODEL=N...].",
    ),
    Flag(
        "max_queued_calls_per_model",
        per_model(parse_count),
        PerModel(128),
        "Model calls of one version that may wait for a thread; more answer UNAVAILABLE "
        "(HTTP 503). Per model: DEFAULT[,MODEL=N...].",
    ),
    Flag(
        "model_config_reload_wait_seconds",
        parse_seconds,
        300.0,
        "How long a config reload (HandleReloadConfigRequest, a polled --model_config_file) "
        "waits for the models it adds to load before it answers (UNAVAILABLE when they are "
        "not loaded yet; they go on loading). The first config waits as long as it takes.",
    ),
    Flag(
        "allow_model_config_over_network",
        B,
        True,
        "Let gRPC clients change the model config (HandleReloadConfigRequest), as TFS does; "
        "false answers PERMISSION_DENIED.",
    ),
    Flag(
        "allow_python_models_over_network",
        B,
        False,
        "Let a config sent over the network add a python model or change its base path "
        "(python models run their directory's code in the server).",
    ),
    Flag(
        "allowed_model_base_path_roots",
        parse_model_roots_flag,
        "",
        "Comma list of directories every model base path must lie under (symlinks and '..' "
        "resolved), whatever config names it, and of URL prefixes in object storage "
        "(s3://bucket[/prefix], gs://bucket[/prefix]) base paths there must start with, "
        "segment by segment; empty = anywhere.",
    ),
    Flag(
        "allowed_request_log_roots",
        parse_roots_flag,
        "",
        "Comma list of directories every logging_config filename_prefix must lie under "
        "(symlinks and '..' resolved); empty = anywhere.",
    ),
    Flag(
        "allowed_profile_roots",
        parse_roots_flag,
        "",
        "Comma list of directories a profile's trace (tensorflow.ProfilerService's Profile: "
        "<logdir>/plugins/profile/...) must be written under (symlinks and '..' resolved); "
        "empty = anywhere, as TFS.",
    ),
    Flag(
        "shutdown_grace_period_seconds",
        parse_seconds,
        30.0,
        "On SIGTERM or SIGINT: how long requests in flight, loads and unloads may take to "
        "end; the process then exits whatever still runs (exit code 3 when something did).",
    ),
    Flag(
        "shutdown_drain_seconds",
        parse_seconds,
        0.0,
        "On SIGTERM or SIGINT, first: how long to go on serving while readiness answers "
        "not ready (GET /v2/health/ready, v2 ServerReady, grpc.health NOT_SERVING), so that "
        "a load balancer's health checks take the replica out before it stops accepting. "
        "0: stop accepting at once, as TFS. The grace period starts after it.",
    ),
    Flag(
        "workers",
        parse_positive_count,
        1,
        "Server processes sharing the gRPC and REST ports (SO_REUSEPORT), each with its own "
        "models, sources and config polling; the process started is their supervisor. 1: "
        "one process, as TFS. More: reload RPCs and v2 repository changes are refused "
        "(FAILED_PRECONDITION), and a worker that dies stops them all (exit code 1).",
    ),
    Flag(
        "rest_api_max_connections",
        parse_positive_count,
        4096,
        "Most REST connections open at once; more wait in the listen backlog until one "
        "closes. Lowered at start to fit the open-file limit (see --open_files_reserve).",
    ),
    Flag(
        "rest_api_idle_timeout_seconds",
        parse_seconds,
        30.0,
        "A REST connection without a request for this long is closed; the same timer bounds "
        "the reading of a request's headers. 0 turns it off.",
    ),
    Flag(
        "rest_api_max_request_head_bytes",
        parse_positive_count,
        DEFAULT_MAX_HEAD_BYTES,
        "Largest REST request head (request line and headers) read; a larger one gets 431 "
        "and the connection is closed.",
    ),
    Flag(
        "rest_api_max_pipelined_requests",
        parse_positive_count,
        DEFAULT_MAX_PIPELINED,
        "Most REST requests one connection may send ahead of the one being answered "
        "(HTTP/1.1 pipelining); past it the connection is not read until answers go out.",
    ),
    Flag(
        "rest_api_max_read_ahead_bytes",
        parse_byte_count,
        DEFAULT_MAX_READ_AHEAD_BYTES,
        "Most bytes of REST request bodies one connection buffers before they are read: a "
        "body streamed in, and those of pipelined requests waiting their turn; past it the "
        "connection is not read until they are taken.",
    ),
    Flag(
        "rest_api_max_buffered_body_bytes",
        parse_byte_count,
        DEFAULT_MAX_BUFFERED_BODY_BYTES,
        "Most bytes of REST request bodies held at once over every connection, counted as "
        "they arrive until their requests end; the request whose body passes it gets 503 "
        "(retry later) and its connection is closed. At least --rest_api_max_body_bytes.",
    ),
    Flag(
        "grpc_max_buffered_message_bytes",
        parse_byte_count,
        DEFAULT_GRPC_MAX_BUFFERED_MESSAGE_BYTES,
        "Most bytes of gRPC request messages held at once over every connection, each from "
        "its receipt until its call ends; the call whose message passes it gets UNAVAILABLE "
        "(retry later). At least the largest message received (grpc.max_receive_message_"
        "length: --max_decoded_bytes_per_request and 4 MiB).",
    ),
    Flag(
        "rest_api_close_linger_seconds",
        parse_seconds,
        DEFAULT_CLOSE_LINGER_SECONDS,
        "After an answer that closes a REST connection (an error such as 413 or 431 while "
        "the request still arrives), how long what the client still sends is read and "
        "dropped so that the client gets the answer before the close; 0 closes at once.",
    ),
    Flag(
        "rest_api_read_timeout_seconds",
        parse_seconds,
        30.0,
        "Longest wait for a REST request's body once its headers are read; a slower body "
        "gets 408 and the connection is closed. 0 turns it off.",
    ),
    Flag(
        "grpc_max_connections",
        parse_positive_count,
        4096,
        "Most gRPC connections open at once; more are closed as they arrive. Lowered at "
        "start to fit the open-file limit (see --open_files_reserve).",
    ),
    Flag(
        "grpc_max_connection_idle_seconds",
        parse_seconds,
        300.0,
        "A gRPC connection without a call for this long is closed (GOAWAY; clients "
        "reconnect). 0 turns it off.",
    ),
    Flag(
        "grpc_handshake_timeout_seconds",
        parse_seconds,
        30.0,
        "Longest wait for a new gRPC connection's handshake (TLS and HTTP/2 preface); 0 "
        "leaves gRPC's own (120 s).",
    ),
    Flag(
        "grpc_keepalive_time_seconds",
        parse_seconds,
        120.0,
        "Ping gRPC clients after this long without traffic and close the connection when "
        "no answer comes within 20 s (a peer that vanished). 0 turns it off.",
    ),
    Flag(
        "model_cache_dir",
        S,
        "",
        "Where versions in object storage (s3://, gs:// base paths) are copied before they "
        "load; one server per directory, private to its user. A restart reuses the copies "
        "whose listing is unchanged. Empty: servo-model-cache-<uid> in the system's "
        "temporary directory.",
    ),
    Flag(
        "model_download_threads",
        parse_positive_count,
        4,
        "Objects downloaded from object storage at once, by all the versions that load.",
    ),
    Flag(
        "model_download_max_bytes_per_second",
        parse_budget,
        0,
        "Bandwidth of all the downloads from object storage together; 0 = unlimited.",
    ),
    Flag(
        "model_version_complete_marker",
        parse_marker,
        "",
        "In object storage, a version is complete, and loads, once it holds an object of "
        "this name (e.g. _SUCCESS, uploaded last). Empty: once two consecutive polls list "
        "the same objects (names, sizes, ETags) and no upload under it is in progress.",
    ),
    Flag(
        "enable_status_page",
        B,
        True,
        "Serve the status page at / on the REST port (models, versions, states, errors, "
        "labels; request rates and latencies when metrics are on): read-only, it shows what "
        "GET /v1/models and the metrics page show. false: / is 404, as in TFS.",
    ),
    Flag(
        "open_files_reserve",
        parse_count,
        256,
        "File descriptors kept for models, polling and logs: at start the open-file limit "
        "is raised to its hard limit, and the connection caps are lowered so that they "
        "leave this many free.",
    ),
    Flag(
        "access_log",
        B,
        False,
        "Write one line per REST and gRPC request (logger servo.access): protocol, client, "
        "method, path, status, API, model, the version that served, bytes in and out, "
        "latency; whatever --log_level says.",
    ),
    Flag(
        "access_log_file",
        S,
        "",
        "With --access_log: append its lines to this file (reopened when log rotation moves "
        "it) instead of stderr.",
    ),
    Flag(
        "log_format",
        parse_log_format,
        "text",
        "text, or json: one JSON object per line (time, level, logger, message, exception; "
        "an access line's fields as keys).",
    ),
    Flag(
        "tensorflow_cpp_min_log_level",
        parse_tf_log_level,
        None,
        "TensorFlow's C++ log level (TF_CPP_MIN_LOG_LEVEL): 0 everything (the start-up "
        "banner too), 1 warnings and errors, 2 errors, 3 nothing. Unset: "
        "TF_CPP_MIN_LOG_LEVEL when the environment sets it, else 3.",
    ),
)


def shown_default(value: Any) -> str:
    """A flag's default as it would be written on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, PerModel):
        return ",".join([shown_default(value.default)] + [f"{n}={v}" for n, v in value.overrides])
    if isinstance(value, tuple):
        value = ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else '""'


class FlagParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage), and that names the closest
    known flag when it is given an unknown one."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")

    def parse_flags(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """The flags of `argv`; exits with 2 on an unknown flag or a bad value."""
        args, unknown = self.parse_known_args(argv)
        if unknown:
            self.error(unknown_flag_message(unknown[0], self.flag_names()))
        held, largest = args.rest_api_max_buffered_body_bytes, args.rest_api_max_body_bytes
        if held < largest:
            self.error(
                f"--rest_api_max_buffered_body_bytes={held} is below --rest_api_max_body_bytes="
                f"{largest}: a body of the largest size accepted could never be read; raise "
                "the first or lower the second"
            )
        self._check_grpc_bound(args)
        return args

    def _check_grpc_bound(self, args: argparse.Namespace) -> None:
        """Exits unless --grpc_max_buffered_message_bytes holds the largest gRPC message the
        server receives (a bad --grpc_channel_arguments is left to the gRPC port's start)."""
        from servo.apis.grpc.service import max_receive_bytes, received_bound, server_options
        from servo.decoded_size import DecodeLimits

        limits = DecodeLimits(args.max_decoded_bytes_per_tensor, args.max_decoded_bytes_per_request)
        try:  # the options the gRPC server starts with (its connection limits aside)
            options = server_options(args.grpc_channel_arguments, (), max_receive_bytes(limits))
        except ValueError:
            return
        largest = received_bound(options)
        held = args.grpc_max_buffered_message_bytes
        if largest is None or largest > held:
            self.error(
                f"--grpc_max_buffered_message_bytes={held} is below the largest gRPC message "
                f"received ({'no limit' if largest is None else f'{largest} bytes'}: "
                "grpc.max_receive_message_length, --max_decoded_bytes_per_request and 4 MiB, "
                "or as --grpc_channel_arguments sets it): a message of that size could never "
                "be held; raise the first or lower the second"
            )

    def flag_names(self) -> list[str]:
        return [o for action in self._actions for o in action.option_strings if o != "-h"]


def unknown_flag_message(arg: str, known: Sequence[str]) -> str:
    """`unknown flag --x; did you mean --y?` for the first argument the parser did not know."""
    if not arg.startswith("-"):
        return f"unexpected argument {arg!r} (flags are written --name=value)"
    name = arg.split("=", 1)[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "see --help for the flags"
    return f"unknown flag {name}; {hint}"


# What --help writes after a flag that takes a value.
METAVARS: dict[Any, str] = {
    parse_port: "PORT",
    parse_int32: "N",
    parse_int64: "N",
    parse_count: "N",
    parse_positive_count: "N",
    parse_byte_count: "BYTES",
    parse_budget: "BYTES",
    parse_seconds: "SECONDS",
    float: "X",
}


def build_parser(prog: str = "servo serve") -> FlagParser:
    parser = FlagParser(
        prog=prog,
        description="Serve models with TensorFlow Serving's APIs. Every flag is written "
        "--name=value; a boolean flag alone means true.",
        allow_abbrev=False,
        usage="%(prog)s [--flag=value ...]",
    )
    for group_name, flags in (
        ("TensorFlow Serving's flags (tensorflow_model_server's, with its defaults)", TFS_FLAGS),
        ("servo's own flags", SERVO_FLAGS),
    ):
        group = parser.add_argument_group(group_name)
        for flag in flags:
            text = f"{flag.help} (default: {shown_default(flag.default)})".replace("%", "%%")
            kwargs: dict[str, Any] = {"type": flag.kind, "default": flag.default, "help": text}
            if flag.kind is parse_bool:
                kwargs.update(nargs="?", const=True, metavar="BOOL")
            else:
                kwargs.update(metavar=METAVARS.get(flag.kind, "VALUE"))
            group.add_argument(f"--{flag.name}", **kwargs)
    return parser


def ineffective_flags_set(args: argparse.Namespace) -> list[str]:
    """Compatibility-only flags set to something other than their default."""
    return [f.name for f in TFS_FLAGS if not f.effective and getattr(args, f.name) != f.default]
