"""The model repository of the Open Inference Protocol's repository extension, over the server
core's running config.

    index()            every model of the config, one entry per version, and the models that
                       `unload` took out (state UNAVAILABLE, reason "unloaded")
    load(name, json)   adds the model to the running config, or replaces its entry, with the
                       ModelConfig `json` gives (TFS's model config entry as JSON, e.g.
                       {"base_path": "/models/m", "model_platform": "onnx"}); without one, a
                       model of the config stays as it is and a model `unload` took out comes
                       back as it was. Returns once the model has loaded (or raises why not),
                       as a reload does.
    unload(name)       removes the model from the running config (its versions unload).

A change is a config reload (`ServerCore.reload_config`): the operator's model-management
grants apply to it exactly as to TFS's HandleReloadConfigRequest (turned off with
--allow_model_config_over_network=false; python models, base-path roots). Changes are applied
one at a time. A polled --model_config_file, when it changes, replaces what they did, as it
replaces a reload RPC's config in TFS.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from google.protobuf import json_format

from servo.core.servable_state import ManagerState
from servo.core.status import Code, ServoError
from servo.protos import model_server_config_pb2
from servo.server.model_management import ModelManagementGrants
from servo.server.server_core import ServerCore
from servo.util.own_thread import on_own_thread

log = logging.getLogger(__name__)

# The protocol's state names (Triton's) for the manager's states.
STATES = {
    ManagerState.START: "LOADING",
    ManagerState.LOADING: "LOADING",
    ManagerState.AVAILABLE: "READY",
    ManagerState.UNLOADING: "UNLOADING",
    ManagerState.END: "UNAVAILABLE",
}


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str  # "" for a model with no version yet
    state: str
    reason: str


class ModelRepository:
    """Thread-safety: every method may be called from any thread."""

    def __init__(self, core: ServerCore, grants: ModelManagementGrants | None = None) -> None:
        self.core = core
        self.grants = grants or ModelManagementGrants()
        # One change at a time; held while a load waits for its model, so nothing that only
        # reads (`index`) takes it.
        self._change = threading.Lock()
        self._unloaded_lock = threading.Lock()
        # Config entries of the models `unload` took out, by name, for `index` and `load`.
        self._unloaded: dict[str, model_server_config_pb2.ModelConfig] = {}

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        entries = []
        for name in self.core.model_names():
            try:
                versions = self.core.model_status(name)
            except ServoError as exc:
                if exc.code is not Code.NOT_FOUND:
                    raise
                versions = []
            if not versions:
                entries.append(IndexEntry(name, "", "UNAVAILABLE", "nothing loaded yet"))
            for v in versions:
                reason = "" if v.status.ok else f"{v.status.code.name}: {v.status.message}"
                if v.state is ManagerState.END and not reason:
                    reason = "unloaded"
                entries.append(IndexEntry(name, str(v.version), STATES[v.state], reason))
        served = set(self.core.model_names())
        with self._unloaded_lock:
            unloaded = list(self._unloaded)
        entries += [
            IndexEntry(name, "", "UNAVAILABLE", "unloaded")
            for name in unloaded
            if name not in served
        ]
        if ready_only:
            entries = [e for e in entries if e.state == "READY"]
        return entries

    async def load(self, name: str, config_json: str | None = None) -> None:
        """`load_now` on a thread of its own (a load waits for the model)."""
        await on_own_thread("servo-repository-load", lambda: self.load_now(name, config_json))

    async def unload(self, name: str) -> None:
        await on_own_thread("servo-repository-unload", lambda: self.unload_now(name))

    def load_now(self, name: str, config_json: str | None = None) -> None:
        if not name:
            raise ServoError(Code.INVALID_ARGUMENT, "The model to load has no name")
        with self._change:
            current = self.core.config
            models = current.model_config_list.config
            existing = next((m for m in models if m.name == name), None)
            with self._unloaded_lock:
                earlier = self._unloaded.get(name)
            if config_json is not None:
                model = _parse_model_config(name, config_json)
            elif existing is not None:
                model = existing
            elif earlier is not None:
                model = earlier
            else:
                raise ServoError(
                    Code.NOT_FOUND,
                    f"Model {name} is not in the repository; load it with its config: "
                    '{"parameters": {"config": "{\\"base_path\\": \\"/models/'
                    f'{name}\\", \\"model_platform\\": \\"onnx\\"}}"}}}}',
                )
            new = self.core.config
            new_models = new.model_config_list.config
            del new_models[:]
            replaced = False
            for m in models:
                if m.name == name:
                    new_models.add().CopyFrom(model)
                    replaced = True
                else:
                    new_models.add().CopyFrom(m)
            if not replaced:
                new_models.add().CopyFrom(model)
            self.grants.check_network_config(current, new)
            self.grants.check_config(new)  # as the core will: refused before anything changes
            log.info(
                "Repository load of model %s (path %s, platform %s)",
                name,
                model.base_path,
                model.model_platform,
            )
            try:
                self.core.reload_config(new)
            finally:
                if name in self.core.model_names():  # in the config now, loaded or not
                    with self._unloaded_lock:
                        self._unloaded.pop(name, None)
            self._check_available(name)

    def _check_available(self, name: str) -> None:
        """A load that changed nothing (the model was in the config already) returns at once:
        it must still say when the model is not ready."""
        try:
            versions = self.core.model_status(name)
        except ServoError as exc:
            if exc.code is not Code.NOT_FOUND:
                raise
            versions = []
        if any(v.state is ManagerState.AVAILABLE for v in versions):
            return
        states = "; ".join(
            f"version {v.version} {v.state.name}"
            + ("" if v.status.ok else f": {v.status.code.name}: {v.status.message}")
            for v in versions
        )
        raise ServoError(
            Code.UNAVAILABLE,
            f"Model {name} is in the config but has no AVAILABLE version "
            f"({states or 'nothing loaded yet'})",
        )

    def unload_now(self, name: str) -> None:
        with self._change:
            current = self.core.config
            models = current.model_config_list.config
            existing = next((m for m in models if m.name == name), None)
            if existing is None:
                raise ServoError(Code.NOT_FOUND, f"Model {name} is not in the server's config")
            new = model_server_config_pb2.ModelServerConfig()
            new.CopyFrom(current)
            kept = [m for m in models if m.name != name]
            del new.model_config_list.config[:]
            for m in kept:
                new.model_config_list.config.add().CopyFrom(m)
            self.grants.check_network_config(current, new)
            log.info("Repository unload of model %s", name)
            self.core.reload_config(new)
            with self._unloaded_lock:
                self._unloaded[name] = existing


def _parse_model_config(name: str, text: str) -> model_server_config_pb2.ModelConfig:
    model = model_server_config_pb2.ModelConfig()
    try:
        json_format.Parse(text, model)
    except json_format.ParseError as exc:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"The config of model {name} is not a ModelConfig of TFS's model config in JSON "
            f'(e.g. {{"base_path": "/models/{name}", "model_platform": "onnx"}}): {exc}',
        ) from None
    if model.name and model.name != name:
        raise ServoError(
            Code.INVALID_ARGUMENT,
            f"The config names model {model.name}, but the request loads {name}",
        )
    model.name = name
    return model
