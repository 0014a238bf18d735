"""Connection limits: the process's open-file limit, and the caps on open connections that
keep clients from using it up.

Every connection takes a file descriptor. Without a cap, enough idle clients take them all and
what needs one next fails with "Too many open files": a model's poll of its base path, a load,
a log. So at start the soft RLIMIT_NOFILE is raised to the hard limit, and the REST and gRPC
connection caps are lowered, when they must be, to leave `reserve` descriptors free for the
rest of the process. A client past a cap waits (REST: in the listen backlog, which takes no
descriptor of the process) or is closed at once (gRPC); polling and loading never run short.

Also here: whether a port is taken already, which the supervisor of --workers asks before its
workers bind with SO_REUSEPORT (which would otherwise share a port another server holds).
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
from dataclasses import dataclass

log = logging.getLogger("servo.server")

# Descriptors of the process besides connections and the reserve: the listening sockets,
# the event loops' and gRPC's own (epoll, eventfds, pipes), the interpreter's.
BASE_DESCRIPTORS = 64


@dataclass(frozen=True)
class ConnectionCaps:
    rest: int
    grpc: int


def raise_open_file_limit() -> int:
    """Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unbounded = 2**20  # Linux's default fs.nr_open, where no limit is set
    target = unbounded if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("Could not raise the open-file limit from %d to %d: %s", soft, target, exc)
            return int(soft)
        return int(target)
    return unbounded if soft == resource.RLIM_INFINITY else int(soft)


def fit_caps(wanted: ConnectionCaps, open_files: int, reserve: int) -> ConnectionCaps:
    """`wanted`, lowered (in proportion, at least 1 each) when the two caps, the reserve and
    the process's own descriptors would not fit under `open_files`."""
    room = open_files - reserve - BASE_DESCRIPTORS
    total = wanted.rest + wanted.grpc
    if total <= room:
        return wanted
    share = max(room, 0) / total
    return ConnectionCaps(max(1, int(wanted.rest * share)), max(1, int(wanted.grpc * share)))


def connection_caps(wanted: ConnectionCaps, reserve: int) -> ConnectionCaps:
    """Raises the open-file limit and fits `wanted` under it (logging when it lowers them)."""
    open_files = raise_open_file_limit()
    caps = fit_caps(wanted, open_files, reserve)
    if caps != wanted:
        log.warning(
            "The open-file limit is %d: connections capped at %d REST and %d gRPC "
            "(--rest_api_max_connections=%d, --grpc_max_connections=%d) to keep %d "
            "descriptors for models and polling (--open_files_reserve)",
            open_files,
            caps.rest,
            caps.grpc,
            wanted.rest,
            wanted.grpc,
            reserve,
        )
    return caps


def grpc_arguments(
    caps: ConnectionCaps, idle: float, handshake: float, keepalive: float
) -> list[tuple[str, int]]:
    """gRPC channel arguments for the connection flags (seconds; 0 leaves gRPC's default)."""
    args = [("grpc.max_allowed_incoming_connections", caps.grpc)]
    if idle > 0:
        args.append(("grpc.max_connection_idle_ms", _ms(idle)))
    if handshake > 0:
        args.append(("grpc.server_handshake_timeout_ms", _ms(handshake)))
    if keepalive > 0:
        args += [("grpc.keepalive_time_ms", _ms(keepalive)), ("grpc.keepalive_timeout_ms", 20_000)]
    return args


def _ms(seconds: float) -> int:
    return max(1, min(int(seconds * 1000), 2**31 - 1))


def port_in_use(address: str, port: int) -> OSError | None:
    """The error of binding (address, port) when something listens there already (the
    supervisor of --workers checks its ports so, before its workers share them)."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError:
        return None  # the server's own bind reports it
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no use
        try:
            probe.bind(where)
        except OSError as exc:
            return exc if exc.errno == errno.EADDRINUSE else None
    return None
