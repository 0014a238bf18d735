"""`tensorflow.ProfilerService` on servo's gRPC port, as TFS registers it with --enable_profiler
(TFS's default: on): TensorFlow's own profiler clients (`tf.profiler.experimental.client.trace`,
TensorBoard's profile plugin) capture a trace of what TensorFlow runs in the server process,
the SavedModel sessions' runs and each op's kernels.

    Profile    runs TensorFlow's profiler session for `opts.duration_ms` (from
               `opts.start_timestamp_ns` when that lies ahead), then writes its XSpace to
               `<repository_root>/<session_id>/<host>.xplane.pb` (host: the request's
               `advanced_configuration["override_hostname"]`, else `host_name`; ':' and '/'
               written '_'), or answers it in `xspace` when `emit_xspace` is set; `empty_trace`
               says whether it holds no event (the client then reports "No trace event was
               collected"). As TSL's profiler_service_impl.cc does.
    Terminate  ends the running Profile of that session_id early; it answers what it has.
               Stopping the server ends every running Profile so.
    Monitor    UNIMPLEMENTED "unimplemented.", as TensorFlow's own profiler server answers.

The continuous-profiling methods of TensorFlow's newer servers are not served (UNIMPLEMENTED).

The trace comes from TensorFlow's Python wrapper of its profiler session,
`tensorflow.python.profiler.internal._pywrap_profiler.ProfilerSession` (what
`tf.profiler.experimental.start` and `stop` use): `start(logdir, options)`, and
`export_to_tb()`, which collects the XSpace and writes it to
`<logdir>/plugins/profile/<timestamp>/<hostname>.xplane.pb`. servo points it at a temporary
directory of its own and moves the file where the request says. (Its `stop()` answers the trace
converted to trace events, not the XSpace.) TensorFlow is imported at the first Profile, not
before: a server serving no TensorFlow model imports it then, which holds the interpreter lock
for a while (stalling requests, as a model's first import does).

What TensorFlow 2.21's wrapper cannot do, so neither does servo: it turns the options' integers
into booleans ("host_tracer_level expects an i value"), so a request's tracer levels are not
applied and every session runs TensorFlow's defaults (host tracer level 2, device tracer level
1, Python tracer off). One profiler session runs at a time in a process (TensorFlow's lock): a
Profile while another runs is answered INTERNAL with TensorFlow's message, as TensorFlow's
server answers it. Models that run outside TensorFlow's executor (ONNX, Python, a Python
model's worker process, and TF Lite, whose interpreter records no profiler events) leave none.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from servo import pip_install
from servo.apis.data_plane import DataPlane
from servo.apis.grpc.service import MalformedLog, call_rpc, unary_service
from servo.core.status import Code, ServoError
from servo.protos import profiler_service_pb2 as pb
from servo.server.model_management import under_roots
from servo.util import tensorflow_logs
from servo.util.own_thread import on_own_thread

log = logging.getLogger(__name__)

SERVICE = "tensorflow.ProfilerService"
XPLANE_SUFFIX = ".xplane.pb"
OVERRIDE_HOSTNAME = "override_hostname"


def tensorflow_installed() -> bool:
    """Whether TensorFlow can be imported (found, not imported)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


class Session(Protocol):
    """A running profiler session."""


class Tracer(Protocol):
    """What captures the trace: TensorFlow's profiler (`TensorFlowTracer`) but in tests.
    Its methods block; the service calls them on threads of their own."""

    def start(self) -> Session:
        """Starts a session; ServoError when it cannot."""
        ...

    def collect(self, session: Session) -> bytes:
        """Ends `session`; the XSpace it collected, serialized."""
        ...

    def discard(self, session: Session) -> None:
        """Ends `session`, dropping what it collected."""
        ...


@dataclass
class _TensorFlowSession:
    session: Any  # _pywrap_profiler.ProfilerSession
    logdir: str


class TensorFlowTracer:
    """TensorFlow's profiler session, through its Python wrapper (imported at the first
    start)."""

    def _wrapper(self) -> Any:
        try:
            with tensorflow_logs.quiet_import():
                from tensorflow.python.profiler.internal import _pywrap_profiler
        except ImportError as exc:
            raise ServoError(
                Code.FAILED_PRECONDITION,
                f"Profiling needs TensorFlow's profiler, which cannot be imported ({exc}): "
                + pip_install("tensorflow"),
            ) from None
        return _pywrap_profiler

    def start(self) -> Session:
        wrapper = self._wrapper()
        logdir = tempfile.mkdtemp(prefix="servo-profile-")
        session = wrapper.ProfilerSession()
        try:
            session.start(logdir, {})
        except Exception as exc:  # TensorFlow's status, as TensorFlow's server answers it
            shutil.rmtree(logdir, ignore_errors=True)
            raise ServoError(Code.INTERNAL, _tf_message(exc)) from None
        return _TensorFlowSession(session, logdir)

    def collect(self, session: Session) -> bytes:
        assert isinstance(session, _TensorFlowSession)
        try:
            try:
                session.session.export_to_tb()
            except Exception as exc:
                raise ServoError(Code.INTERNAL, _tf_message(exc)) from None
            pattern = os.path.join(session.logdir, "plugins", "profile", "*", "*" + XPLANE_SUFFIX)
            files = glob.glob(pattern)
            if len(files) != 1:
                raise ServoError(
                    Code.INTERNAL,
                    f"TensorFlow's profiler wrote {len(files)} traces where servo expected one "
                    f"({pattern})",
                )
            with open(files[0], "rb") as f:
                return f.read()
        finally:
            session.session = None
            shutil.rmtree(session.logdir, ignore_errors=True)

    def discard(self, session: Session) -> None:
        assert isinstance(session, _TensorFlowSession)
        session.session = None  # the wrapper's destructor ends TensorFlow's session
        shutil.rmtree(session.logdir, ignore_errors=True)


def _tf_message(exc: Exception) -> str:
    return str(getattr(exc, "message", "") or exc or type(exc).__name__)


# -- the trace's bytes ------------------------------------------------------------------------

# XSpace.planes = 1, XPlane.lines = 3, XLine.events = 4 (TSL's xplane.proto).
_PLANES, _LINES, _EVENTS = 1, 3, 4


def _varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _submessages(data: memoryview, number: int) -> list[memoryview]:
    """The length-delimited fields `number` of the message in `data`, from its wire form."""
    found = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        wire = key & 7
        if wire == 0:
            _, at = _varint(data, at)
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        elif wire == 2:
            size, at = _varint(data, at)
            if key >> 3 == number:
                found.append(data[at : at + size])
            at += size
        else:
            raise ValueError(f"unexpected wire type {wire}")
    if at != len(data):
        raise ValueError("truncated message")
    return found


def xspace_is_empty(xspace: bytes) -> bool:
    """Whether a serialized XSpace holds no event in any line of any plane (TSL's IsEmpty),
    read from the wire form without parsing the trace."""
    for plane in _submessages(memoryview(xspace), _PLANES):
        for line in _submessages(plane, _LINES):
            if _submessages(line, _EVENTS):
                return False
    return True


def trace_path(request: pb.ProfileRequest) -> str:
    """Where Profile writes the trace: <repository_root>/<session_id>/<host>.xplane.pb."""
    host = request.host_name
    override = request.opts.advanced_configuration.get(OVERRIDE_HOSTNAME)
    if override is not None and override.WhichOneof("value") == "string_value":
        host = override.string_value or host
    # TensorFlow writes ':' as '_' (the host is host:port); '/' too, so that the file stays
    # in the session's directory.
    name = host.replace(":", "_").replace("/", "_") + XPLANE_SUFFIX
    return os.path.join(request.repository_root, request.session_id, name)


def roots_check(roots: Sequence[str]) -> Callable[[str], None]:
    """`--allowed_profile_roots`: refuses (PERMISSION_DENIED) a trace path whose directory,
    resolved (symlinks, `..`), lies under none of `roots`; empty: anywhere, as TensorFlow."""

    def check(path: str) -> None:
        if roots and not under_roots(os.path.dirname(os.path.abspath(path)), roots):
            raise ServoError(
                Code.PERMISSION_DENIED,
                f"The profile's trace {path} would be written outside the allowed roots "
                f"({', '.join(roots)}); add a root to --allowed_profile_roots or profile into "
                "a log directory under one of them",
            )

    return check


def write_trace(path: str, xspace: bytes) -> None:
    """Writes the trace whole: a reader (TensorBoard) never sees half a file."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=".servo-", suffix=XPLANE_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(xspace)
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise


# -- the service ------------------------------------------------------------------------------


@dataclass
class _Running:
    """A Profile in progress: `stop` ends its session early (Terminate, or the call's end);
    `abandoned` drops what it collected (the call was cancelled)."""

    session_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    abandoned: threading.Event = field(default_factory=threading.Event)


class ProfilerServices:
    """Thread-safety: handlers run on the gRPC server's event loop; the tracer's blocking
    calls run on threads of their own."""

    def __init__(
        self,
        plane: DataPlane,
        *,
        tracer: Tracer | None = None,
        check_path: Callable[[str], None] = lambda path: None,
        clock: Callable[[], int] = time.time_ns,
        malformed_log: MalformedLog | None = None,
    ) -> None:
        self.plane = plane
        self.tracer: Tracer = tracer or TensorFlowTracer()
        self.check_path = check_path  # raises ServoError for a path it refuses
        self.clock = clock  # Unix nanoseconds, as start_timestamp_ns
        self.malformed_log = malformed_log or MalformedLog()
        self._running: list[_Running] = []
        self._ending = False  # the server stops: no new Profile

    async def profile(
        self, request: pb.ProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProfileResponse:
        async def work(_: float | None) -> pb.ProfileResponse:
            return await self._profile(request)

        return await call_rpc(self.plane, "Profile", "", context, work)

    async def _profile(self, request: pb.ProfileRequest) -> pb.ProfileResponse:
        path = None
        if not request.emit_xspace:
            if not request.repository_root:
                raise ServoError(
                    Code.INVALID_ARGUMENT,
                    "ProfileRequest.repository_root is empty: there is nowhere to write the "
                    "trace (set it, or emit_xspace)",
                )
            path = trace_path(request)
            self.check_path(path)
        duration_ms = request.opts.duration_ms or request.duration_ms
        log.info(
            "Profiling for %d ms (session %r)%s",
            duration_ms,
            request.session_id,
            f" into {path}" if path else "",
        )
        if self._ending:
            raise ServoError(Code.UNAVAILABLE, "The server is stopping")
        # A later start the client asked for (its deadline bounds the wait).
        delay = max(0.0, (request.opts.start_timestamp_ns - self.clock()) / 1e9)
        running = _Running(request.session_id)
        self._running.append(running)
        try:
            xspace = await on_own_thread(
                "servo-profiler", lambda: self._capture(delay, duration_ms / 1000, running)
            )
        except asyncio.CancelledError:  # the client went away, or the server stops
            running.abandoned.set()
            running.stop.set()
            raise
        finally:
            self._running.remove(running)
        assert xspace is not None
        response = pb.ProfileResponse(empty_trace=xspace_is_empty(xspace))
        if path is None:
            response.xspace = xspace
        else:
            where = path
            try:
                await on_own_thread("servo-profiler", lambda: write_trace(where, xspace))
            except OSError as exc:
                raise ServoError(
                    Code.INTERNAL, f"Cannot write the trace to {path}: {exc}"
                ) from None
        log.info(
            "Profiled session %r: %d bytes%s%s",
            request.session_id,
            len(xspace),
            ", no events" if response.empty_trace else "",
            f", written to {path}" if path else "",
        )
        return response

    def _capture(self, delay: float, seconds: float, running: _Running) -> bytes | None:
        """One session, start to end, on one thread: started `delay` seconds from now, the
        XSpace it collected in `seconds` (both shorter when stopped), or None when
        abandoned."""
        if delay and running.stop.wait(min(delay, threading.TIMEOUT_MAX)):
            seconds = 0.0  # ended before it began: an empty session answers
        if running.abandoned.is_set():
            return None
        session = self.tracer.start()
        running.stop.wait(min(seconds, threading.TIMEOUT_MAX))
        if running.abandoned.is_set():
            self.tracer.discard(session)
            return None
        return self.tracer.collect(session)

    async def terminate(
        self, request: pb.TerminateRequest, context: grpc.aio.ServicerContext
    ) -> pb.TerminateResponse:
        for running in self._running:
            if running.session_id == request.session_id:
                running.stop.set()
        return pb.TerminateResponse()

    async def monitor(
        self, request: pb.MonitorRequest, context: grpc.aio.ServicerContext
    ) -> pb.MonitorResponse:
        async def work(_: float | None) -> pb.MonitorResponse:
            raise ServoError(Code.UNIMPLEMENTED, "unimplemented.")  # TensorFlow's words

        return await call_rpc(self.plane, "Monitor", "", context, work)

    def end_all(self) -> None:
        """Ends every running Profile early, each answering what it collected, and refuses
        new ones (at shutdown, so that a long capture does not hold the server's drain to
        its grace period)."""
        self._ending = True
        for running in self._running:
            running.stop.set()

    def generic_handlers(self) -> Sequence[grpc.GenericRpcHandler]:
        methods: list[tuple[str, Any, Any, Any]] = [
            ("Profile", self.profile, pb.ProfileRequest, pb.ProfileResponse),
            ("Terminate", self.terminate, pb.TerminateRequest, pb.TerminateResponse),
            ("Monitor", self.monitor, pb.MonitorRequest, pb.MonitorResponse),
        ]
        return [
            unary_service(
                SERVICE, methods, self.plane, lambda api, what: self.malformed_log.report(api, what)
            )
        ]
