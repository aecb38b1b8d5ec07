"""Model manager: finds versions under each base path, loads and unloads them per policy.

Follows TF Serving's behaviour: versions are integer directories under the base path; the
base path is polled; a new version is loaded (and warmed up) before the versions it replaces
are unloaded, so requests are never dropped; each version reports START, LOADING, AVAILABLE,
UNLOADING or END, with the error of a failed load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Sequence

import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2

from serving import warmup
from serving.batching import Batcher
from serving.config import BatchingConfig, ModelConfig
from serving.errors import invalid_argument, not_found
from serving.servable import Servable, run_signature

State = get_model_status_pb2.ModelVersionStatus.State
_log = logging.getLogger(__name__)
# TF Serving's default --max_num_load_retries.
MAX_LOAD_RETRIES = 5


@dataclasses.dataclass
class VersionStatus:
    """What GetModelStatus reports for one version."""

    version: int
    state: int
    error: str = ""


@dataclasses.dataclass
class _Version:
    status: VersionStatus
    servable: Servable | None = None
    batcher: Batcher | None = None
    failures: int = 0


class ModelManager:
    """Serves the versions of each configured model; start() begins polling, stop() unloads."""

    def __init__(
        self,
        models: Sequence[ModelConfig],
        batching: BatchingConfig | None = None,
        poll_interval_s: float = 1.0,
    ):
        self._models = {m.name: m for m in models}
        self._batching = batching
        self._poll_interval_s = poll_interval_s
        self._versions: dict[str, dict[int, _Version]] = {m.name: {} for m in models}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts polling the base paths in a background thread (the first poll is immediate)."""
        self._thread = threading.Thread(target=self._poll_loop, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling and unloads every version."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        for name, versions in self._versions.items():
            for number in list(versions):
                self._unload(name, number)

    def poll_once(self) -> None:
        """Loads wanted versions that are new on disk and unloads the ones no longer wanted."""
        for model in self._models.values():
            on_disk = _versions_on_disk(model.base_path)
            wanted = model.version_policy.select(on_disk)
            for number in sorted(wanted):
                if self._should_load(model.name, number):
                    self._load(model, number)
            versions = self._versions[model.name]
            serving_wanted = any(
                versions[v].status.state == State.AVAILABLE for v in wanted if v in versions
            )
            for number, version in list(versions.items()):
                # Keep an unwanted version until a wanted one serves, unless it left the disk.
                replaceable = serving_wanted or number not in on_disk
                if version.status.state == State.AVAILABLE and number not in wanted and replaceable:
                    self._unload(model.name, number)

    def servable(self, name: str, version: int | None = None, label: str = "") -> Servable:
        """Returns the servable a request addresses: a version, a label, or the latest.

        Raises:
          ServingError: NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for an
            unknown label.
        """
        with self._lock:
            versions = self._versions.get(name)
            if label:
                model = self._models.get(name)
                if model is None or label not in model.version_labels:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                version = model.version_labels[label]
            if versions is None:
                raise not_found(f"Servable not found for request: Latest({name})")
            available = {
                v: entry.servable
                for v, entry in versions.items()
                if entry.status.state == State.AVAILABLE
            }
        if version is None:
            if not available:
                raise not_found(f"Servable not found for request: Latest({name})")
            return available[max(available)]
        if version not in available:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return available[version]

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Returns the status of every version of `name` seen so far, or of one version.

        Raises:
          ServingError: NOT_FOUND for an unknown model or version.
        """
        with self._lock:
            versions = self._versions.get(name)
            if versions is None:
                raise not_found(f"Could not find any versions of model {name}")
            if version is not None:
                if version not in versions:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [dataclasses.replace(versions[version].status)]
            return [dataclasses.replace(v.status) for _, v in sorted(versions.items())]

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - a bad poll must not stop serving; log and retry
                _log.exception("polling the model base paths failed; retrying")
            self._stop.wait(self._poll_interval_s)

    def _should_load(self, name: str, number: int) -> bool:
        entry = self._versions[name].get(number)
        if entry is None:
            return True
        failed = entry.status.state == State.END and entry.status.error
        return bool(failed) and entry.failures <= MAX_LOAD_RETRIES

    def _load(self, model: ModelConfig, number: int) -> None:
        previous = self._versions[model.name].get(number)
        entry = _Version(
            VersionStatus(number, State.START), failures=previous.failures if previous else 0
        )
        self._set(model.name, entry, State.START)
        self._set(model.name, entry, State.LOADING)
        path = os.path.join(model.base_path, str(number))
        batcher = Batcher(self._batching) if self._batching else None
        try:
            servable = Servable(model.name, number, path, runner=batcher or run_signature)
            warmup.replay(servable, warmup.read_warmup_requests(path))
        except Exception as err:  # noqa: BLE001 - a bad version is reported, never fatal
            if batcher:
                batcher.close()
            entry.failures += 1
            self._set(model.name, entry, State.END, f"loading {path} failed: {err}")
            return
        entry.servable, entry.batcher = servable, batcher
        self._set(model.name, entry, State.AVAILABLE)
        _log.info("Successfully loaded servable version {name: %s version: %d}", model.name, number)

    def _unload(self, name: str, number: int) -> None:
        entry = self._versions[name][number]
        if entry.status.state != State.AVAILABLE:
            return
        self._set(name, entry, State.UNLOADING)
        with self._lock:
            batcher, entry.servable, entry.batcher = entry.batcher, None, None
        if batcher:
            batcher.close()
        self._set(name, entry, State.END)

    def _set(self, name: str, entry: _Version, state: int, error: str = "") -> None:
        with self._lock:
            entry.status.state, entry.status.error = state, error
            self._versions[name][entry.status.version] = entry
        log = _log.warning if error else _log.info
        log(
            "model %s version %d: %s%s",
            name,
            entry.status.version,
            State.Name(state),
            f" ({error})" if error else "",
        )


def _versions_on_disk(base_path: str) -> list[int]:
    """Returns the integer-named subdirectories of `base_path` that hold a SavedModel."""
    if not tf.io.gfile.isdir(base_path):
        return []
    versions = []
    for name in tf.io.gfile.listdir(base_path):
        name = name.rstrip("/")
        if name.isdigit() and tf.io.gfile.exists(os.path.join(base_path, name, "saved_model.pb")):
            versions.append(int(name))
    return versions
