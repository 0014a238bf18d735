#!/usr/bin/env python3
"""Serves the example sharded table (`make serve-sharded`): 3 shard servers and their front,
in the foreground, until Ctrl-C (or SIGTERM), or until one of the servers stops by itself.

The models are those scripts/make_example_models.py writes (default `examples/models/`):
`embeddings_shards/shard-<i>/`, each served as model `embeddings` (platform `lookup`) by a
servo of its own, and the front `embeddings_sharded/` (platform `sharded`), which fans each
request's keys out to the shards over gRPC. The shards start first, all at once; the front
starts when every shard serves its table (its load asks every shard), and the script prints
where each server listens and a curl to try once the front serves too.

    python scripts/serve_sharded.py [--models DIR] [--bind-address 127.0.0.1] \
        [--grpc-port 8600] [--rest-port 8601] \
        [--shard-grpc-ports 8610,8611,8612] [--shard-rest-ports 8620,8621,8622] [--logs DIR]

- Readiness is a state: each server's version of its model AVAILABLE, asked of its REST
  status API (servo opens its ports once its models serve); a server that exits before is
  reported with the end of its log, and everything started is stopped.
- The shards' gRPC ports default to those the example front lists (127.0.0.1:8610, :8611,
  :8612). When the shards listen elsewhere (other ports, or a bind address that a client here
  does not reach as 127.0.0.1), the front served is a copy of the example's listing where they
  listen, written to `LOGS/front/1/`.
- The front's log goes to this terminal, each shard's to `LOGS/shard-<i>.log` (default
  `build/serve-sharded/`).
- Stopping: on SIGINT, SIGTERM or SIGHUP, or when a server exits by itself, the front gets
  SIGTERM (servo's graceful stop) and then the shards, each by its PID; a server still running
  after STOP_TIMEOUT seconds gets SIGKILL. A second Ctrl-C while they stop sends the servers
  already stopping a second SIGTERM, on which servo exits at once. The servers run in sessions
  of their own, so that a Ctrl-C at the terminal reaches this script alone and each server
  gets one signal from it; on Linux each also gets SIGTERM should this script die without
  stopping them (SIGKILL).
- Exit code: 0 when stopped by a signal, 1 when a server failed to start or stopped by itself,
  2 for bad arguments.

Loopback by default: anyone who reaches the ports may use every API (README, Security).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = REPO / "examples" / "models"
DEFAULT_LOGS = REPO / "build" / "serve-sharded"
SHARDS_DIR = "embeddings_shards"
FRONT_MODEL = "embeddings_sharded"
FRONT_FILE = "sharded.json"
FRONT_VERSION = "1"
DEFAULT_GRPC_PORT = 8600
DEFAULT_REST_PORT = 8601
DEFAULT_SHARD_REST_PORTS = (8620, 8621, 8622)
READY_TIMEOUT = 120.0  # seconds for a server to serve its model
STOP_TIMEOUT = 45.0  # seconds after SIGTERM before SIGKILL (servo's grace period is 30)
POLL = 0.05  # seconds between checks of a server's state
LOG_TAIL = 20  # lines of a failed shard's log shown
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


class Stop(Exception):
    """A stop signal arrived."""


class Failed(Exception):
    """A server did not start or stopped by itself."""


@dataclass
class Server:
    name: str  # "shard 0", "front"
    model: str
    platform: str
    host: str  # where clients reach it
    grpc_port: int
    rest_port: int
    log: Path | None  # None: this terminal
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rest(self, path: str = "") -> str:
        return f"http://{_url_host(self.host)}:{self.rest_port}{path}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def client_host(bind_address: str) -> str:
    """Where a client on this machine reaches a server bound to `bind_address`."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind_address, bind_address)


def _ports(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of ports: {text}") from None
    if not all(0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"ports must lie in 1..65535: {text}")
    return ports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", type=Path, default=DEFAULT_MODELS, help="default: examples/models"
    )
    parser.add_argument("--bind-address", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="the front's")
    parser.add_argument("--rest-port", type=int, default=DEFAULT_REST_PORT, help="the front's")
    parser.add_argument(
        "--shard-grpc-ports", type=_ports, help="shard 0 first; default: the example front's"
    )
    parser.add_argument(
        "--shard-rest-ports",
        type=_ports,
        default=list(DEFAULT_SHARD_REST_PORTS),
        help="shard 0 first; default: 8620,8621,8622",
    )
    parser.add_argument(
        "--logs", type=Path, default=DEFAULT_LOGS, help="default: build/serve-sharded"
    )
    return parser


# -- the front: the example's, or a copy listing the shards' addresses ------------------------


def front_dir(models: Path, addresses: Sequence[str], logs: Path) -> tuple[Path, dict[str, object]]:
    """The front's base directory and its sharded.json: the example's when it lists
    `addresses`, else a copy listing them under `logs/front/`."""
    example = models / FRONT_MODEL
    doc = json.loads((example / FRONT_VERSION / FRONT_FILE).read_text(encoding="utf-8"))
    if doc.get("shards") == list(addresses):
        return example, doc
    doc = {**doc, "shards": list(addresses)}
    base = logs / "front"
    version = base / FRONT_VERSION
    version.mkdir(parents=True, exist_ok=True)
    (version / FRONT_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return base, doc


# -- starting and watching servers -----------------------------------------------------------


def _child_setup(parent: int, libc: ctypes.CDLL | None) -> None:
    """Runs in each server's process before servo starts: stop signals unblocked (they are
    blocked around its start here), and SIGTERM when this script dies (Linux)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the script died before prctl took effect
            os._exit(1)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True)


class Servers:
    """The servers this script started, stopped by PID whatever happens. `on_signal` is the
    handler of the stop signals: the first raises Stop, any later one (while the servers stop)
    hurries them."""

    def __init__(self, bind_address: str) -> None:
        self.bind_address = bind_address
        self.started: list[Server] = []
        self.stopping = False
        self.hurry = False
        self._terminated: list[Server] = []  # sent SIGTERM
        self._libc = _libc()

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            raise Stop(signal.Signals(signum).name)
        if not self.hurry:  # a second signal: a second SIGTERM, on which servo exits at once
            self.hurry = True
            os.write(2, b"servo: a second signal: the servers stopping exit now\n")  # no print
            for server in list(self._terminated):
                _signal(server, signal.SIGTERM)

    def _terminate(self, server: Server) -> None:
        _signal(server, signal.SIGTERM)
        self._terminated.append(server)

    def start(self, server: Server, base_path: Path) -> None:
        args = [
            sys.executable,
            "-m",
            "servo",
            "serve",
            f"--bind_address={self.bind_address}",
            f"--port={server.grpc_port}",
            f"--rest_api_port={server.rest_port}",
            f"--model_name={server.model}",
            f"--model_base_path={base_path.resolve()}",
            f"--model_platform={server.platform}",
        ]
        out = None
        if server.log is not None:
            server.log.parent.mkdir(parents=True, exist_ok=True)
            out = server.log.open("wb")
        parent = os.getpid()
        # A stop signal arriving now waits until the server is in `started`, to be stopped.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            server.process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
                preexec_fn=lambda: _child_setup(parent, self._libc),
            )
            self.started.append(server)
        finally:
            if out is not None:
                out.close()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def wait_serving(self, servers: Sequence[Server]) -> None:
        """Waits until each server's model has an AVAILABLE version (Failed if one exits)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback
        waiting = list(servers)
        deadline = time.monotonic() + READY_TIMEOUT
        while waiting:
            for server in list(waiting):
                assert server.process is not None
                if server.process.poll() is not None:
                    raise Failed(_exited(server, "before serving"))
                if _available(opener, server):
                    waiting.remove(server)
            if waiting:
                if time.monotonic() > deadline:
                    names = ", ".join(s.name for s in waiting)
                    raise Failed(f"{names}: not serving within {READY_TIMEOUT:.0f} s")
                time.sleep(POLL)

    def wait_any_exit(self) -> Server:
        """Blocks until one of the servers exits (left unreaped, for its Popen); returns it."""
        pids = {s.pid: s for s in self.started}
        while True:
            for server in self.started:
                assert server.process is not None
                if server.process.poll() is not None:
                    return server
            result = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            if result is None:
                continue
            server = pids.get(result.si_pid)
            if server is None:  # no child of this script but its servers; reaped, not waited
                os.waitpid(result.si_pid, 0)
                continue
            assert server.process is not None
            server.process.wait()
            return server

    def stop(self) -> None:
        """SIGTERM to the front, then to the shards, each by PID; SIGKILL after STOP_TIMEOUT."""
        self.stopping = True
        fronts = [s for s in self.started if s.platform == "sharded"]
        shards = [s for s in self.started if s.platform != "sharded"]
        for group in (fronts, shards):
            for server in group:
                self._terminate(server)
            deadline = time.monotonic() + STOP_TIMEOUT
            for server in group:
                assert server.process is not None
                try:
                    server.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    print(f"servo: {server.name} (pid {server.pid}): SIGKILL", file=sys.stderr)
                    server.process.kill()
                    server.process.wait()


def _signal(server: Server, sig: signal.Signals) -> None:
    """`sig` to the server's PID, unless it has exited (its PID is not reused before Popen
    reaps it, which send_signal checks)."""
    assert server.process is not None
    server.process.send_signal(sig)


def _available(opener: urllib.request.OpenerDirector, server: Server) -> bool:
    try:
        with opener.open(server.rest(f"/v1/models/{server.model}"), timeout=5) as answer:
            doc = json.loads(answer.read())
    except (OSError, ValueError):  # not listening yet (its models load first), or no answer
        return False
    return any(v.get("state") == "AVAILABLE" for v in doc.get("model_version_status", []))


def _exited(server: Server, when: str) -> str:
    assert server.process is not None
    message = (
        f"{server.name} (pid {server.pid}) exited with code {server.process.returncode} {when}"
    )
    if server.log is not None:
        lines = server.log.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join(f"    {line}" for line in lines[-LOG_TAIL:])
        message += f"; the end of its log, {server.log}:\n{tail}"
    return message


# -- the script ------------------------------------------------------------------------------


def _try_line(front: Server, keys: Sequence[str]) -> str:
    body = json.dumps({"instances": list(keys)})
    return f"curl -d '{body}' {front.rest(f'/v1/models/{front.model}:predict')}"


def serve(args: argparse.Namespace) -> int:
    models: Path = args.models
    shard_dirs = sorted(
        (models / SHARDS_DIR).glob("shard-*"), key=lambda p: int(p.name.partition("-")[2])
    )
    if not shard_dirs or not (models / FRONT_MODEL / FRONT_VERSION / FRONT_FILE).is_file():
        print(
            f"servo: no sharded example under {models}: run scripts/make_example_models.py",
            file=sys.stderr,
        )
        return 2
    example = json.loads((models / FRONT_MODEL / FRONT_VERSION / FRONT_FILE).read_text())
    grpc_ports = args.shard_grpc_ports or [int(a.rpartition(":")[2]) for a in example["shards"]]
    rest_ports = args.shard_rest_ports
    if not len(grpc_ports) == len(rest_ports) == len(shard_dirs):
        print(
            f"servo: {len(shard_dirs)} shards in {models / SHARDS_DIR}, but "
            f"{len(grpc_ports)} gRPC and {len(rest_ports)} REST ports",
            file=sys.stderr,
        )
        return 2
    host = client_host(args.bind_address)
    logs: Path = args.logs
    table = str(example.get("model", "embeddings"))
    shards = [
        Server(f"shard {i}", table, "lookup", host, grpc, rest, logs / f"shard-{i}.log")
        for i, (grpc, rest) in enumerate(zip(grpc_ports, rest_ports, strict=True))
    ]
    front = Server("front", FRONT_MODEL, "sharded", host, args.grpc_port, args.rest_port, None)
    servers = Servers(args.bind_address)
    for sig in STOP_SIGNALS:
        signal.signal(sig, servers.on_signal)
    try:
        addresses = [f"{_url_host(host)}:{s.grpc_port}" for s in shards]
        front_base, _ = front_dir(models, addresses, logs)
        for shard, directory in zip(shards, shard_dirs, strict=True):
            servers.start(shard, directory)
        servers.wait_serving(shards)
        servers.start(front, front_base)
        servers.wait_serving([front])
        _print_ready(servers, front, front_base)
        stopped = servers.wait_any_exit()
        raise Failed(_exited(stopped, "by itself"))
    except Stop as stop:
        print(f"servo: {stop}: stopping the front and the shards", file=sys.stderr, flush=True)
        return 0
    except Failed as failed:
        servers.stopping = True  # a signal from now on hurries the stop
        print(f"servo: {failed}\nservo: stopping the others", file=sys.stderr, flush=True)
        return 1
    finally:
        servers.stop()
        print("servo: every server stopped", file=sys.stderr, flush=True)


def _print_ready(servers: Servers, front: Server, front_base: Path) -> None:
    lines = ["servo: the sharded example table serves:"]
    for s in servers.started:
        where = f"gRPC {_url_host(s.host)}:{s.grpc_port}, REST {_url_host(s.host)}:{s.rest_port}"
        log = f", log {s.log}" if s.log is not None else ""
        lines.append(f"  {s.name}: pid {s.pid}, model {s.model}, {where}{log}")
    lines.append(f"  the front's shards: {front_base / FRONT_VERSION / FRONT_FILE}")
    keys = ["item-0000", "item-0042", "item-4095", "unknown"]
    lines += [
        "Try:",
        f"  {_try_line(front, keys)}",
        f"  curl {front.rest(f'/v1/models/{front.model}')}",
        "Ctrl-C stops the front and the shards.",
    ]
    print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    return serve(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
