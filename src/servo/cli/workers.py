"""`--workers N`: N server processes sharing the gRPC and REST ports, and their supervisor.

With N > 1 the process started does not serve: it checks that the ports are free, then starts
N workers, each `python -m servo serve` with the same flags and `--workers=1`, told its place
by the environment (`SERVO_WORKER_INDEX`, `SERVO_WORKER_COUNT`, `SERVO_WORKER_DIR`,
`SERVO_WORKER_READY_FD`). Each worker is a whole server of its own (its sources polling the
same base paths and --model_config_file, its manager, its loaded models) that listens on the
same ports with SO_REUSEPORT, set on both listeners for workers only (`grpc.so_reuseport` for
gRPC; off otherwise: a busy port must fail the start). Linux spreads new connections over
the listeners by a hash of their addresses, so one connection's requests stay with one
worker, and many connections spread over all.

The supervisor says the ports are open ("Running gRPC ModelServer at ...", "Exporting
HTTP/REST API at:...") once every worker has written to its ready pipe, i.e. once every
worker has loaded its models and opened both ports. It forwards SIGTERM and SIGINT to every
worker (each drains and stops as one server would; a second signal stops them at once) and
exits with the worst of their codes. A worker that ends without being told (killed, or
failing its start) is logged as an error and every other worker is stopped (SIGTERM, its
drain): the supervisor then exits 1 (or a worker's worse code), as TFS's single process would
have ended, and nothing is restarted behind the operator's back. Workers are in process
groups of their own (a terminal's Ctrl-C reaches the supervisor only, which forwards it) and
get SIGTERM from the kernel if the supervisor dies (PR_SET_PDEATHSIG), so none outlives it.

Metrics: every worker also answers its own metrics (`ServerMetrics.snapshot`, JSON) on a
unix socket in the supervisor's directory; the worker that gets a scrape of the Prometheus
page gathers its siblings' and renders their sum (`ServerMetrics.render_merged`): the page
one process would show. A sibling that does not answer makes the page 503 (a page missing a
worker would look like counters going back).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from servo.cli.connections import port_in_use
from servo.core.status import Code, ServoError
from servo.metrics import ServerMetrics

log = logging.getLogger("servo.server")

INDEX_ENV = "SERVO_WORKER_INDEX"
COUNT_ENV = "SERVO_WORKER_COUNT"
DIR_ENV = "SERVO_WORKER_DIR"
READY_FD_ENV = "SERVO_WORKER_READY_FD"

EXIT_FAILED = 1
GATHER_TIMEOUT = 5.0  # seconds for a sibling's metrics
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerRole:
    """This process's place among the workers, from the supervisor's environment."""

    index: int
    count: int
    directory: str
    ready_fd: int

    @classmethod
    def from_env(cls) -> WorkerRole | None:
        if INDEX_ENV not in os.environ:
            return None
        return cls(
            int(os.environ[INDEX_ENV]),
            int(os.environ[COUNT_ENV]),
            os.environ[DIR_ENV],
            int(os.environ[READY_FD_ENV]),
        )

    def metrics_socket(self, index: int) -> str:
        return os.path.join(self.directory, f"metrics-{index}.sock")

    def report_ready(self) -> None:
        """Tells the supervisor that this worker serves (once)."""
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, b"R")
            os.close(self.ready_fd)


class WorkerMetrics:
    """A worker's side of the shared metrics page: its snapshot served on its unix socket,
    and the page of every worker summed."""

    def __init__(self, role: WorkerRole, metrics: ServerMetrics) -> None:
        self.role = role
        self.metrics = metrics
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        path = self.role.metrics_socket(self.role.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._server = await asyncio.start_unix_server(self._answer, path)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(orjson.dumps(self.metrics.snapshot()))
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _sibling(self, index: int) -> dict[str, list[list[Any]]]:
        reader, writer = await asyncio.open_unix_connection(self.role.metrics_socket(index))
        try:
            snapshot: dict[str, list[list[Any]]] = orjson.loads(await reader.read())
            return snapshot
        finally:
            writer.close()

    async def page(self) -> bytes:
        """The Prometheus page of every worker's metrics summed; UNAVAILABLE (503) when a
        sibling does not answer."""
        siblings = [i for i in range(self.role.count) if i != self.role.index]
        results = await asyncio.gather(
            *(asyncio.wait_for(self._sibling(i), GATHER_TIMEOUT) for i in siblings),
            return_exceptions=True,
        )
        snapshots = []
        for index, result in zip(siblings, results, strict=True):
            if isinstance(result, BaseException):
                raise ServoError(
                    Code.UNAVAILABLE,
                    f"The metrics of worker {index} of {self.role.count} are not available "
                    f"({type(result).__name__}: {result}); the page would not be the sum",
                )
            snapshots.append(result)
        return self.metrics.render_merged(snapshots)


# -- the supervisor --------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """In the worker, before it runs: SIGTERM when the supervisor dies (and at once if it
    already did)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(EXIT_FAILED)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    ready_pipe: int
    ready: bool = False
    code: int | None = None


def worker_command(argv: Sequence[str]) -> list[str]:
    """The command of a worker: this server's flags, then `--workers=1` (the last wins)."""
    return [sys.executable, "-m", "servo", "serve", *argv, "--workers=1"]


def describe(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def supervise(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Runs `args.workers` workers until they have all ended; the worst exit code."""
    if args.grpc_socket_path:
        log.error(
            "--grpc_socket_path cannot be used with --workers=%d: a unix socket has one listener",
            args.workers,
        )
        return EXIT_FAILED
    ports = [("gRPC", args.port)] + ([("HTTP", args.rest_api_port)] if args.rest_api_port else [])
    for what, port in ports:
        busy = port_in_use(args.bind_address, port)
        if busy is not None:
            log.error("Failed to start %s Server at %s:%d: %s", what, args.bind_address, port, busy)
            return EXIT_FAILED
    directory = tempfile.mkdtemp(prefix="servo-workers-")
    try:
        return _Supervisor(args, list(argv), directory).run()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class _Supervisor:
    def __init__(self, args: argparse.Namespace, argv: list[str], directory: str) -> None:
        self.args = args
        self.argv = argv
        self.directory = directory
        self.workers: list[_Worker] = []
        self.signals: list[int] = []
        self.stopping = False
        self.failed = False
        self.announced = False

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def run(self) -> int:
        count = self.args.workers
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        selector = selectors.DefaultSelector()
        selector.register(wake_r, selectors.EVENT_READ)
        parent = os.getpid()
        log.info("Starting %d workers (--workers)", count)
        for index in range(count):
            read, write = os.pipe()
            env = {
                **os.environ,
                INDEX_ENV: str(index),
                COUNT_ENV: str(count),
                DIR_ENV: self.directory,
                READY_FD_ENV: str(write),
            }
            process = subprocess.Popen(
                worker_command(self.argv),
                env=env,
                pass_fds=(write,),
                process_group=0,
                preexec_fn=lambda: _die_with_parent(parent),
            )
            os.close(write)
            worker = _Worker(index, process, read)
            self.workers.append(worker)
            selector.register(read, selectors.EVENT_READ, worker)
            log.info("Worker %d of %d started: pid %d", index, count, process.pid)
        while any(w.code is None for w in self.workers):
            for key, _ in selector.select():
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    continue
                worker = key.data
                if os.read(worker.ready_pipe, 16):
                    worker.ready = True
                selector.unregister(worker.ready_pipe)
                os.close(worker.ready_pipe)
            self._handle_signals()
            self._reap()
            self._announce()
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)
        codes = [w.code for w in self.workers if w.code is not None]
        worst = max((EXIT_FAILED if c < 0 else c) for c in codes)
        if self.failed:
            worst = max(worst, EXIT_FAILED)
        log.log(
            logging.INFO if worst == 0 else logging.WARNING,
            "Every worker has stopped; exiting with code %d",
            worst,
        )
        return worst

    def _handle_signals(self) -> None:
        pending, self.signals = self.signals, []
        for signum in pending:
            if signum == signal.SIGCHLD:
                continue
            name = signal.Signals(signum).name
            log.info("Received %s: forwarding it to every worker", name)
            self.stopping = True
            self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for worker in self.workers:
            if worker.code is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    def _reap(self) -> None:
        for worker in self.workers:
            if worker.code is not None:
                continue
            code = worker.process.poll()
            if code is None:
                continue
            worker.code = code
            if self.stopping and code == 0:
                log.info("Worker %d (pid %d) stopped", worker.index, worker.process.pid)
                continue
            if self.stopping and not self.failed:
                log.warning(
                    "Worker %d (pid %d) %s while stopping",
                    worker.index,
                    worker.process.pid,
                    describe(code),
                )
                continue
            if not self.failed:
                log.error(
                    "Worker %d (pid %d) %s %s; stopping every worker (nothing is restarted)",
                    worker.index,
                    worker.process.pid,
                    describe(code),
                    "while serving" if worker.ready else "before it served",
                )
                self.failed = self.stopping = True
                self._signal_all(signal.SIGTERM)
            else:
                log.info("Worker %d (pid %d) %s", worker.index, worker.process.pid, describe(code))

    def _announce(self) -> None:
        if self.announced or self.stopping or not all(w.ready for w in self.workers):
            return
        self.announced = True
        a = self.args
        count = len(self.workers)
        log.info(
            "Running gRPC ModelServer at %s:%d ... (%d workers)", a.bind_address, a.port, count
        )
        if a.rest_api_port:
            log.info(
                "Exporting HTTP/REST API at:%s:%d ... (%d workers)",
                a.bind_address,
                a.rest_api_port,
                count,
            )
