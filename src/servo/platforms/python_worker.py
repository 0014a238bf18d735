"""A Python model in a worker process of its own (`--python_model_isolation=process`).

The server never imports the model's code: a worker process, forked by multiprocessing's
fork server (a fresh interpreter started for it, never a fork of the threaded server), imports
the version's `model.py`, loads it, runs its calls and unloads it; the signatures come back to
the server when the load ends. What this buys:

- The model's Python runs under the worker's interpreter lock, so a CPU-heavy load or
  predict never stalls the server's other requests.
- A crash of the model's code (`os._exit`, a segfault, the kernel's OOM killer) fails the
  call it was running (INTERNAL, naming the model and its dead worker) and a new worker is
  started, loading the version again; the server keeps running. A load whose worker dies
  fails the version's load.
- A call past its deadline (`servable.call_deadline()`) kills the worker, answers
  DEADLINE_EXCEEDED, and a new worker is started: the hung call ends, so the version can
  unload.

Inputs and outputs cross by shared memory: the server owns two segments per worker (inputs,
outputs) that grow to the largest call seen. A numeric input is copied once into its segment
and the model reads it in place (read-only views, valid during the call); a numeric output is
copied into the other segment and once out of it by the server. Arrays of strings (object
dtype) are pickled over the worker's pipe. A worker runs one call at a time; the version's
calls queue for it.

`stop_busy_workers()` (at shutdown, after the drain) kills the workers whose call has not
ended; `stop_all_workers()` every worker left. Workers also die with the server, however it
ends: each watches a pipe only the server holds open (and each is a daemon process).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from servo.core.status import Code, ServoError
from servo.platforms.servable import (
    ModelServable,
    Signature,
    call_deadline,
    check_inputs,
    check_outputs,
    unknown_signature,
    unloaded,
)

log = logging.getLogger(__name__)

ALIGN = 64  # bytes: each array in a segment starts on a cache line
MIN_SEGMENT = 1 << 16
_NUMERIC = frozenset("biufc")
# Workers fork from multiprocessing's fork server: a process started fresh (never a fork of
# the threaded server) with numpy and servo's model code imported, so a worker starts, and
# restarts after a crash or a deadline, without importing them again.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["numpy", "servo.platforms.python_model"])
_import_path_lock = threading.Lock()


def _import_this_servo() -> None:
    """Puts the directory this servo is imported from first on PYTHONPATH, which the fork
    server inherits: it runs with the default path (Python 3.11's fork server ignores the
    server's sys.path), and its workers must import this servo, not another installed one."""
    import servo

    root = os.path.dirname(os.path.dirname(os.path.abspath(servo.__file__)))
    with _import_path_lock:
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if not paths or os.path.abspath(paths[0]) != root:
            os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


_workers: weakref.WeakSet[ModelWorker] = weakref.WeakSet()
_workers_lock = threading.Lock()


# -- what crosses: arrays as (alias, dtype, shape, offset) in a segment, or pickled ---------


def _layout(arrays: Mapping[str, np.ndarray]) -> tuple[list[tuple[str, int]], int]:
    """Offsets of the numeric arrays in a segment, and the bytes they need."""
    offsets = []
    end = 0
    for alias, array in arrays.items():
        if array.dtype.kind in _NUMERIC:
            offsets.append((alias, end))
            end += -(-array.nbytes // ALIGN) * ALIGN
    return offsets, end


def _pack(arrays: Mapping[str, np.ndarray], segment: SharedMemory | None) -> list[Any]:
    """Writes the numeric arrays into `segment` (it must hold `_layout`'s bytes) and returns
    descriptors: ("shm", alias, dtype, shape, offset) or ("pickle", alias, array)."""
    offsets = dict(_layout(arrays)[0])
    packed: list[Any] = []
    for alias, array in arrays.items():
        offset = offsets.get(alias)
        if offset is None or segment is None:
            packed.append(("pickle", alias, array))
            continue
        view = np.ndarray(array.shape, array.dtype, segment.buf, offset)
        np.copyto(view, array, casting="no")
        packed.append(("shm", alias, array.dtype.str, array.shape, offset))
    return packed


def _unpack(packed: list[Any], segment: SharedMemory | None, copy: bool) -> dict[str, Any]:
    arrays: dict[str, Any] = {}
    for item in packed:
        if item[0] == "pickle":
            arrays[item[1]] = item[2]
            continue
        _, alias, dtype, shape, offset = item
        assert segment is not None
        view = np.ndarray(shape, np.dtype(dtype), segment.buf, offset)
        if copy:
            arrays[alias] = view.copy()
        else:
            view.flags.writeable = False
            arrays[alias] = view
    return arrays


def _segment_bytes(needed: int) -> int:
    return max(MIN_SEGMENT, 1 << max(0, needed - 1).bit_length())


# -- the worker process's side ---------------------------------------------------------------


def _die_with_server(lifeline: Connection) -> None:
    """Ends the worker when the server dies, even while the model's code runs: `lifeline`'s
    other end is held by the server alone and never written, so a read returns only when the
    server's end closes."""

    def watch() -> None:
        with contextlib.suppress(BaseException):
            lifeline.recv()
        os._exit(70)

    threading.Thread(target=watch, name="servo-lifeline", daemon=True).start()


class _Segments:
    """The worker's attachments to the server's segments, by name."""

    def __init__(self) -> None:
        self._open: dict[str, SharedMemory] = {}

    def get(self, name: str | None) -> SharedMemory | None:
        if name is None:
            return None
        segment = self._open.get(name)
        if segment is None:
            segment = self._open[name] = SharedMemory(name)
        return segment

    def keep_only(self, names: set[str | None]) -> None:
        for name in set(self._open) - names:
            segment = self._open.pop(name)
            with contextlib.suppress(BufferError):  # the model still holds a view of it
                segment.close()


def _error_reply(exc: BaseException) -> tuple[Any, ...]:
    if isinstance(exc, ServoError):
        return ("error", int(exc.code), exc.message)
    return ("error", int(Code.INTERNAL), f"{type(exc).__name__}: {exc}")


def worker_main(conn: Connection, lifeline: Connection, path: str) -> None:
    """The worker process: loads the version at `path`, then answers calls until told to
    unload or until the server's end of the pipe closes."""
    _die_with_server(lifeline)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server handles Ctrl-C, then stops us
    from servo.platforms import python_model as python
    from servo.platforms.options import PlatformOptions

    try:
        servable = python.load_in_process(path, PlatformOptions())
    except BaseException as exc:
        conn.send(_error_reply(exc))
        return
    conn.send(("ready", dict(servable.signatures), os.getpid()))
    segments = _Segments()
    inputs: Any = None
    outputs: Any = None
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the server is gone
            if message[0] == "unload":
                break
            _, name, packed, output_names, in_name, out_name, out_size = message
            segments.keep_only({in_name, out_name})
            try:
                inputs = _unpack(packed, segments.get(in_name), copy=False)
                outputs = servable.run(servable.signatures[name], inputs, output_names)
                needed = _layout(outputs)[1]
                fits = out_name is not None and needed <= out_size
                out = segments.get(out_name) if fits else None
                reply: tuple[Any, ...] = ("ok", _pack(outputs, out), needed)
            except BaseException as exc:
                reply = _error_reply(exc)
            inputs = outputs = None  # views of a segment go before it may close
            try:
                conn.send(reply)
            except Exception as exc:  # an output pickle cannot carry (PicklingError, TypeError)
                conn.send(_error_reply(exc))
    finally:
        try:
            servable.close()
        except BaseException as exc:
            log.warning("Python model %s: unload() raised %s", path, exc)
        finally:
            segments.keep_only(set())
            with contextlib.suppress(OSError):
                conn.send(("unloaded",))


# -- the server's side -----------------------------------------------------------------------


def _how_it_ended(process: Any) -> str:
    code = process.exitcode
    if code is None:
        return "it stopped answering"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class ModelWorker:
    """One worker process running one version of a Python model, from the server's side.

    Thread-safety: `call` may be called from many threads; calls run one at a time.
    `kill` may be called from any thread at any time (a busy call then fails).
    """

    def __init__(self, path: str, model_name: str, shared_memory: bool = True) -> None:
        self.path = path
        self.model_name = model_name
        self.shared_memory = shared_memory  # False: every array pickled (bench/python_worker.py)
        self.signatures: dict[str, Signature] = {}
        self._lock = threading.Lock()  # one call (or start, or stop) at a time
        self._process: Any = None
        self._conn: Connection | None = None
        self._lifeline: Connection | None = None  # closing it ends the worker
        self._busy = False
        self._stopped = False
        self._in: SharedMemory | None = None
        self._out: SharedMemory | None = None
        self.starts = 0  # worker processes started, the first included
        with _workers_lock:
            _workers.add(self)

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    @property
    def _who(self) -> str:
        return f"Python model {self.model_name} ({self.path})"

    # starting and stopping

    def start(self) -> None:
        """Starts the worker and waits for its load; raises the load's error."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._stopped:
            raise unloaded(self._who)
        process, parent, held = self._spawn()
        self._process, self._conn, self._lifeline = process, parent, held
        self.starts += 1
        if self._stopped:  # killed while it started: kill() may not have seen the process
            self._reap()
            raise unloaded(self._who)
        self._busy = True  # a load that never returns is ended at shutdown as a call is
        try:
            reply = self._receive(None, "load")
        finally:
            self._busy = False
        if reply[0] != "ready":
            self._reap()
            raise ServoError(Code(reply[1]), reply[2])
        self.signatures = reply[1]
        log.info("%s: worker process %d loaded it", self._who, process.pid)

    def _spawn(self) -> tuple[Any, Connection, Connection]:
        """A new worker process loading the model: it, the server's end of its pipe and
        its lifeline."""
        _import_this_servo()
        parent, child = _CONTEXT.Pipe()
        lifeline, held = _CONTEXT.Pipe(duplex=False)  # the worker reads, the server holds
        process = _CONTEXT.Process(
            target=worker_main,
            args=(child, lifeline, self.path),
            name=f"servo-python-{self.model_name}",
            daemon=True,
        )
        process.start()
        child.close()
        lifeline.close()
        return process, parent, held

    def _receive(self, deadline: float | None, doing: str) -> Any:
        """The worker's next reply; kills the worker and raises at the deadline or when it
        dies (INTERNAL, naming the model and how the worker ended)."""
        conn, process = self._conn, self._process
        assert conn is not None and process is not None
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = wait([conn, process.sentinel], timeout)
        if conn in ready:
            try:
                return conn.recv()
            except (EOFError, OSError):
                pass
        if not ready:  # the deadline passed: end the call by ending its worker
            pid = process.pid
            self._reap()
            log.warning(
                "%s: a call passed its deadline; worker %d killed, a new one starts",
                self._who,
                pid,
            )
            # The runner's own answer at the deadline, word for word (TFS's): either may
            # reach the client first.
            raise ServoError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
        process.join(5.0)
        how = _how_it_ended(process)
        pid = process.pid
        self._reap()
        raise ServoError(
            Code.INTERNAL,
            f"{self._who}: its worker process (pid {pid}) died during {doing} ({how})"
            + ("" if doing == "load" else "; a new worker is started"),
        )

    def _reap(self) -> None:
        """Kills the worker, if any, and forgets it."""
        process, conn, lifeline = self._process, self._conn, self._lifeline
        self._process, self._conn, self._lifeline = None, None, None
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join()
            process.close()
        for end in (conn, lifeline):
            if end is not None:
                end.close()

    def _restart_later(self) -> None:
        def restart() -> None:
            with self._lock:
                if self._process is None and not self._stopped:
                    try:
                        self._start()
                    except ServoError as exc:
                        log.error("%s: restarting its worker failed: %s", self._who, exc)

        threading.Thread(
            target=restart, name=f"servo-restart-{self.model_name}", daemon=True
        ).start()

    def kill(self) -> None:
        """Kills the worker process now (a call it runs fails); no restart follows."""
        self._stopped = True
        process = self._process
        if process is not None:
            with contextlib.suppress(Exception):
                process.kill()

    @property
    def busy(self) -> bool:
        return self._busy

    def stop(self, wait: float | None = None) -> None:
        """Unloads the model in the worker (its unload() runs) and ends the process. With
        `wait`, waits at most that many seconds for a call, start or stop in progress (a
        killed worker's end), and leaves the rest to it."""
        self._stopped = True
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            log.warning("%s: its worker is still busy; leaving it to end", self._who)
            return
        try:
            if self._process is not None and self._conn is not None:
                with contextlib.suppress(OSError, ServoError):
                    self._conn.send(("unload",))
                    self._receive(time.monotonic() + 30.0, "unload")
                self._reap()
            for segment in (self._in, self._out):
                if segment is not None:
                    segment.close()
                    segment.unlink()
            self._in = self._out = None
        finally:
            self._lock.release()

    # calls

    def _segment(self, current: SharedMemory | None, needed: int) -> SharedMemory | None:
        if needed == 0:
            return current
        if current is not None and current.size >= needed:
            return current
        if current is not None:
            current.close()
            current.unlink()
        return SharedMemory(create=True, size=_segment_bytes(needed))

    def call(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None,
        deadline: float | None,
    ) -> dict[str, np.ndarray]:
        # A call waits for the worker no longer than its deadline (the calls before it may
        # be slow, or a restart may be loading the model).
        wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=wait):
            raise ServoError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
        try:
            return self._call(signature_name, inputs, output_names, deadline)
        finally:
            self._lock.release()

    def _call(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None,
        deadline: float | None,
    ) -> dict[str, np.ndarray]:
        if deadline is not None and time.monotonic() >= deadline:
            raise ServoError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if self._process is None:
            self._start()  # after a crash, when the restart has not run yet
        assert self._conn is not None
        if self.shared_memory:
            self._in = self._segment(self._in, _layout(inputs)[1])
        packed = _pack(inputs, self._in)
        out = self._out
        message = (
            "call",
            signature_name,
            packed,
            None if output_names is None else list(output_names),
            None if self._in is None else self._in.name,
            None if out is None else out.name,
            0 if out is None else out.size,
        )
        self._busy = True
        try:
            with contextlib.suppress(OSError, EOFError):  # a dead worker: _receive says how
                self._conn.send(message)
            reply = self._receive(deadline, "predict")
            if reply[0] not in ("ok", "error"):  # a worker that lost track of its calls
                self._reap()
                raise ServoError(
                    Code.INTERNAL,
                    f"{self._who}: its worker answered {reply[0]!r} to a call; a new worker "
                    "is started",
                )
        except ServoError:
            if not self._stopped:
                self._restart_later()
            raise
        finally:
            self._busy = False
        if reply[0] == "error":
            raise ServoError(Code(reply[1]), reply[2])
        _, packed_out, needed = reply
        outputs = _unpack(packed_out, out, copy=True)
        if self.shared_memory and (out is None or needed > out.size):  # room for the next
            self._out = self._segment(out, needed)
        return outputs


class WorkerServable(ModelServable):
    """A Python model's version served by a `ModelWorker`: the servable the server holds."""

    platform = "python"
    may_run_inline = False
    takes_deadline = True  # reads call_deadline(): a call past it ends with its worker

    def __init__(self, worker: ModelWorker) -> None:
        self.worker = worker
        self.path = worker.path
        self._closed = False

    @classmethod
    def load(cls, path: str, model_name: str, shared_memory: bool = True) -> WorkerServable:
        worker = ModelWorker(path, model_name, shared_memory)
        worker.start()
        return cls(worker)

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self.worker.signatures

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        if self._closed:
            raise unloaded(f"Python model {self.path}")
        own = self.worker.signatures.get(signature.name)
        if own is None:
            raise unknown_signature(signature.name)
        check_inputs(own, inputs)
        check_outputs(own, output_names)
        return self.worker.call(own.name, inputs, output_names, call_deadline())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.worker.stop()


def _all() -> list[ModelWorker]:
    with _workers_lock:
        return list(_workers)


def stop_busy_workers() -> int:
    """Kills every worker whose call or load has not ended (shutdown, after the drain): the
    calls and loads fail and their threads end. Returns how many."""
    busy = [w for w in _all() if w.busy]
    for worker in busy:
        log.warning("%s: a call still runs at shutdown; its worker is killed", worker._who)
        worker.kill()
    return len(busy)


STOP_WAIT_SECONDS = 5.0  # for a killed worker's call or start to end, at shutdown


def stop_all_workers() -> None:
    """Kills every worker process left (shutdown, after the models unloaded), waiting a
    few seconds at most for each to let go."""
    for worker in _all():
        worker.kill()
        with contextlib.suppress(Exception):
            worker.stop(wait=STOP_WAIT_SECONDS)
