"""The `--model_config_file` poller's one look at the file: read whole, parsed, then applied.

An editor or a copy may leave the file empty or half-written for a moment; neither may
change what is served:

- The file is read whole, and read again at the next poll when its size or modification
  time changed during the read (it is being written). In object storage (`s3://`, `gs://`)
  an object is read in one request, the old text or the new, never a mix.
- A file that cannot be read or parsed, or that the server core refuses, is logged once and
  the running config stays; it is tried again when its text changes. Text protobuf's parser
  refuses is logged as TFS logs it: the parser's lines, then "Failed to read
  ModelServerConfig file: Invalid protobuf file: '<path>'". A read that fails (a store
  unreachable) is also told to `poll_errors`, at every poll.
- An empty file (nothing set) takes no action, as in TFS ("Taking no action for empty
  config."); an explicit `model_config_list {}` is the operator's and unloads every model.
- A file whose config is the running one does nothing.
- A config is applied without waiting for the models it adds (the server core's reload waits
  for them on a thread of its own and logs what fails), so the next poll comes on time
  however long a load takes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Protocol

from servo.core.status import Code, ServoError
from servo.server import config as configs
from servo.util import gfile

log = logging.getLogger(__name__)


class ConfigTarget(Protocol):
    """What the poller applies configs to (the server core)."""

    @property
    def config(self) -> configs.ModelServerConfig: ...

    def reload_config(self, config: configs.ModelServerConfig, *, wait: bool = True) -> None: ...


class ModelConfigFilePoller:
    """Thread-safety: one thread calls `poll_once`."""

    def __init__(
        self,
        path: str,
        target: ConfigTarget,
        poll_errors: Callable[[str, Code], None] | None = None,
    ) -> None:
        self.path = path
        self._target = target
        self._poll_errors = poll_errors
        self._ignored: str | None = None  # the last text not applied (logged once)

    def poll_once(self) -> None:
        text = self._read()
        if text is None or text == self._ignored:
            return
        try:
            config = configs.parse_text(text, configs.ModelServerConfig(), self.path)
            if config.WhichOneof("config") is None:
                self._ignored = text
                log.info("Taking no action for empty config. (%s)", self.path)
                return
            configs.validate_model_server_config(config)
        except configs.InvalidConfigFile as exc:
            # TFS's line (after the parser's own), then what servo does about it.
            self._ignored = text
            log.error("Failed to read ModelServerConfig file: %s", exc)
            log.warning("Ignoring the new %s; the running config stays", self.path)
            return
        except configs.ConfigError as exc:
            self._ignored = text
            log.error("Ignoring the new %s; the running config stays: %s", self.path, exc)
            return
        self._ignored = None
        if config == self._target.config:
            return
        log.info("Reloading the config from %s", self.path)
        try:
            self._target.reload_config(config, wait=False)
        except configs.ConfigError as exc:
            self._ignored = text
            log.error("Ignoring the new %s; the running config stays: %s", self.path, exc)
        except ServoError as exc:
            if config != self._target.config:  # refused: nothing changed
                self._ignored = text
            log.error("Config reload from %s: %s", self.path, exc)

    def _read(self) -> str | None:
        """The file's whole text, or None (logged) when it cannot be read or is being
        written."""
        if gfile.is_remote(self.path):
            try:
                data = gfile.read_file(self.path)
            except OSError as exc:
                self._unreadable(f"Cannot read '{self.path}': {exc}", gfile.error_code(exc))
                return None
            return self._decode(data)
        try:
            with open(self.path, "rb") as f:
                before = os.fstat(f.fileno())
                data = f.read()
                after = os.stat(self.path)
        except OSError as exc:
            self._unreadable(f"Cannot read '{self.path}': {exc}", gfile.error_code(exc))
            return None
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(
            data
        ) != after.st_size:
            log.info("%s changed while it was read; reading it again at the next poll", self.path)
            return None
        return self._decode(data)

    def _decode(self, data: bytes) -> str | None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._log_unreadable(f"Cannot read '{self.path}': {exc}")
            return None

    def _unreadable(self, message: str, code: Code) -> None:
        if self._poll_errors is not None:
            self._poll_errors(self.path, code)
        self._log_unreadable(message)

    def _log_unreadable(self, message: str) -> None:
        if self._ignored != message:
            self._ignored = message
            log.error("Ignoring the new %s; the running config stays: %s", self.path, message)
