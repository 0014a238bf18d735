"""The gRPC port's bound on the request messages held at once, over every connection
(--grpc_max_buffered_message_bytes).

A call's request message counts, by its bytes as received, from the moment grpc hands it to
servo (received whole) until the call ends: while it waits for the model (the runner's
queue, a batch, the thread pool), while it runs and while its answer is made. The call whose
message takes the total past the bound is answered UNAVAILABLE at once, without running,
and its message is dropped; the calls already held go on. The bound's first refusal in a
minute is logged as a warning.

What grpc's C core buffers for messages still arriving is not counted: each of those is
bounded by grpc.max_receive_message_length, and connections by --grpc_max_connections.
Each worker (--workers) has its own bound, as it has its own connections.

Every method of every service (TFS's, the Open Inference Protocol's, health, the profiler)
is held to it by the wrapper each gets where it registers (servo.apis.grpc.registrar).

Thread-safety: the counts are kept on the gRPC server's event loop only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

WARNING_SECONDS = 60.0
FLAG = "--grpc_max_buffered_message_bytes"

# Told of each call refused: its method's path (/package.Service/Method), its message as
# parsed (or a servo.apis.grpc.service.Malformed).
OnRefused = Callable[[str, Any], None]


class MessageBudget:
    """The request bytes the server holds, against `limit`. `on_refused(method, message)`
    (the request metrics) is told of each call refused; `clock` is time.monotonic but in
    tests."""

    def __init__(
        self,
        limit: int,
        *,
        on_refused: OnRefused | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.held = 0
        self.on_refused = on_refused
        self.clock = clock
        self._logged: float | None = None

    def take(self, size: int) -> str | None:
        """Holds `size` more bytes, or says why not (the bound would be passed): the
        refused call's answer."""
        total = self.held + size
        if total <= self.limit:
            self.held = total
            return None
        now = self.clock()
        if self._logged is None or now - self._logged >= WARNING_SECONDS:
            self._logged = now
            log.warning(
                "gRPC request messages held reached %d bytes (%s %d): calls past it get "
                "UNAVAILABLE",
                self.held,
                FLAG,
                self.limit,
            )
        return (
            f"This request's message of {size} bytes would take the request messages the "
            f"server holds to {total} bytes, past its bound of {self.limit} ({FLAG}); "
            "retry later"
        )

    def release(self, size: int) -> None:
        self.held -= size
