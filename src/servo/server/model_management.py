"""Model management grants: what the operator lets a config change, and from where.

TFS has no authentication: any client that reaches the gRPC port may send
HandleReloadConfigRequest. servo keeps that by default (TFS's integration tests rely on it)
and lets the operator narrow it:

- `allow_model_config_over_network` (default true, as TFS): model config changes over the
  network (the reload RPC) at all.
- `allow_python_models_over_network` (default false): a `python` model runs the code of its
  model directory inside the server, so one that a network config adds, or whose base path
  it changes, is refused unless this is set; the operator's own config file may always list
  them.
- `allowed_model_base_path_roots`, `allowed_request_log_roots` (empty: anywhere): every
  config's base paths and request-log file name prefixes, wherever the config comes from,
  must lie under one of these directories (for a prefix: the directory its files go to),
  compared after normalising the path and resolving symlinks when the config is applied, so
  that `..` or a link in the path cannot lead out of a root. Each version directory is
  checked the same way when its version is aspired and again when its load starts, so a
  version directory that is a link out of the roots, or a base path replaced by one after
  the config was applied, fails that version (PERMISSION_DENIED) and nothing of it is read.
  A link that appears inside a version directory during its load is not checked.
  A root may also be a URL prefix in object storage, `s3://bucket[/prefix]` or
  `gs://bucket[/prefix]`: a base path in a store is allowed under a URL root that is a
  prefix of it segment by segment (`s3://models` allows `s3://models/m`, not
  `s3://models-2/m`), a URL being refused outright when it has `.`, `..` or empty segments,
  a port, credentials or a query (servo.util.gfile.check_url); object stores have no links,
  and the copies servo downloads never leave their cache entry. `file://` roots and base
  paths are local paths. A local root never allows a URL, nor a URL root a local path.

Refusals are `ServoError`s with PERMISSION_DENIED whose message names the flag to change.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from servo.core.servable_id import ServableId
from servo.core.status import Code, ServoError
from servo.protos import model_server_config_pb2
from servo.server.config import ModelServerConfig, model_platform
from servo.util import gfile

# Platforms whose models run their directory's code (a composite may have python parts).
CODE_PLATFORMS = frozenset({"python", "composite"})


def parse_roots(text: str, *, urls: bool = False) -> tuple[str, ...]:
    """A comma list of directories as resolved absolute paths, and with `urls` of URL
    prefixes in object storage (normalised); ValueError for a relative path or a URL servo
    refuses."""
    roots = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if gfile.is_remote(part) and not urls:
            raise ValueError(f"an allowed root here must be a local directory, got {part!r}")
        if gfile.is_remote(part):
            try:
                gfile.check_url(part)
            except ValueError as exc:
                raise ValueError(f"allowed root {part!r}: {exc}") from None
            roots.append(gfile.normalize(part))
            continue
        local = gfile.local_path(part)
        if not os.path.isabs(local):
            raise ValueError(f"an allowed root must be an absolute path, got {part!r}")
        roots.append(os.path.realpath(local))
    return tuple(roots)


def under_roots(path: str, roots: Iterable[str]) -> bool:
    """Whether `path`, resolved (symlinks, `..`), is one of `roots` or lies under one; a URL
    in object storage, whether a URL root is a prefix of it, segment by segment."""
    if gfile.is_remote(path):
        try:
            gfile.check_url(path)
        except ValueError:
            return False
        url = gfile.normalize(path)
        return any(
            gfile.is_remote(root) and (url == root or url.startswith(root + "/")) for root in roots
        )
    resolved = os.path.realpath(gfile.local_path(path))
    return any(
        not gfile.is_remote(root) and os.path.commonpath([root, resolved]) == root for root in roots
    )


@dataclass(frozen=True)
class ModelManagementGrants:
    allow_model_config_over_network: bool = True
    allow_python_models_over_network: bool = False
    allowed_model_base_path_roots: tuple[str, ...] = ()
    allowed_request_log_roots: tuple[str, ...] = ()
    # --workers: with more than one process, each with its own models, a config sent over
    # the network would reach only the worker that received it.
    workers: int = 1

    def check_config(self, config: ModelServerConfig) -> None:
        """Refuses a config (from anywhere) whose base paths or request-log prefixes lie
        outside the allowed roots."""
        for model in config.model_config_list.config:
            self._check_base_path(model)
            if model.HasField("logging_config"):
                prefix = model.logging_config.log_collector_config.filename_prefix
                roots = self.allowed_request_log_roots
                # The files are <prefix>.<n>.tfrecord: their directory is what must lie
                # under a root (a prefix that is a root itself writes beside it).
                where = os.path.dirname(os.path.abspath(prefix)) if prefix else ""
                if prefix and roots and not under_roots(where, roots):
                    raise ServoError(
                        Code.PERMISSION_DENIED,
                        f"Model {model.name}: request-log filename_prefix {prefix} is outside "
                        f"the allowed roots ({', '.join(roots)}); add a root to "
                        "--allowed_request_log_roots or log under one of them",
                    )

    def _check_base_path(self, model: model_server_config_pb2.ModelConfig) -> None:
        roots = self.allowed_model_base_path_roots
        if not roots:
            return
        if not under_roots(model.base_path, roots):
            raise ServoError(
                Code.PERMISSION_DENIED,
                f"Model {model.name}: base path {model.base_path} is outside the allowed roots "
                f"({', '.join(roots)}); add a root to --allowed_model_base_path_roots or move "
                "the model under one of them",
            )

    def check_version_path(self, id: ServableId, path: str) -> None:
        """Refuses a version directory that, with its symlinks resolved, lies outside the
        allowed base-path roots."""
        roots = self.allowed_model_base_path_roots
        if roots and not under_roots(path, roots) and gfile.is_remote(path):
            raise ServoError(
                Code.PERMISSION_DENIED,
                f"Version directory {path} of {id} is outside the allowed roots "
                f"({', '.join(roots)}); add a root to --allowed_model_base_path_roots or move "
                "the model under one of them",
            )
        if roots and not under_roots(path, roots):
            raise ServoError(
                Code.PERMISSION_DENIED,
                f"Version directory {path} of {id} resolves to {os.path.realpath(path)}, "
                f"outside the allowed roots ({', '.join(roots)}); add a root to "
                "--allowed_model_base_path_roots or move the model under one of them",
            )

    def check_network_config(self, current: ModelServerConfig, new: ModelServerConfig) -> None:
        """Refuses a config sent over the network that the grants do not allow (the
        config's own checks and `check_config` come after, in the server core)."""
        if self.workers > 1:
            raise ServoError(
                Code.FAILED_PRECONDITION,
                f"Model config changes over the network are not supported with --workers="
                f"{self.workers}: each worker has its own models and would apply it alone; "
                "change --model_config_file (polled by every worker, "
                "--model_config_file_poll_wait_seconds) instead",
            )
        if not self.allow_model_config_over_network:
            raise ServoError(
                Code.PERMISSION_DENIED,
                "Model config changes over the network are turned off on this server "
                "(--allow_model_config_over_network=false); change --model_config_file instead",
            )
        if self.allow_python_models_over_network:
            return
        served = {(m.name, m.base_path) for m in current.model_config_list.config}
        for model in new.model_config_list.config:
            try:
                platform = model_platform(model)
            except ValueError:
                continue  # the server core refuses it with its own message
            if platform in CODE_PLATFORMS and (model.name, model.base_path) not in served:
                raise ServoError(
                    Code.PERMISSION_DENIED,
                    f"Model {model.name}: a {platform} model at {model.base_path} runs that "
                    "directory's code, and adding or changing one over the network is not "
                    "allowed; list it in --model_config_file, or start the server with "
                    "--allow_python_models_over_network=true",
                )


def is_empty_model_list(config: ModelServerConfig) -> bool:
    """A `model_config_list {}` with no models: over the network, no action (it would unload
    every model)."""
    return (
        config.WhichOneof("config") == "model_config_list" and not config.model_config_list.config
    )
