"""Which tf.distribute strategy the Trainer uses, chosen from the devices it finds.

- several workers in TF_CONFIG (Vertex AI Training with replicas > 1, or a
  hand-made cluster): MultiWorkerMirroredStrategy;
- a TPU (Vertex AI Training on a TPU machine): TPUStrategy;
- several GPUs: MirroredStrategy; one GPU: OneDeviceStrategy on it;
- otherwise the default strategy (one CPU).

`choose` is pure (it decides from a description of the environment) so it is
tested without the hardware; `strategy()` reads the environment when called.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping

import tensorflow as tf

MULTI_WORKER = "multi_worker_mirrored"
TPU = "tpu"
MIRRORED = "mirrored"
ONE_DEVICE = "one_device"
DEFAULT = "default"


@dataclasses.dataclass(frozen=True)
class Devices:
    """What the training process can use."""

    gpus: int = 0
    tpu: bool = False
    workers: int = 1
    task_type: str = "chief"
    task_index: int = 0
    has_chief: bool = True

    @property
    def is_chief(self) -> bool:
        """Writes the real outputs: the chief, or worker 0 when the cluster has no chief."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_index == 0 and not self.has_chief


def devices_from(tf_config: str | None, gpus: int, tpu: bool) -> Devices:
    """Describes the environment from a TF_CONFIG value and the device counts."""
    if not tf_config:
        return Devices(gpus=gpus, tpu=tpu)
    try:
        parsed = json.loads(tf_config)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not JSON: {err}") from err
    cluster: Mapping[str, list] = parsed.get("cluster", {})
    workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    task = parsed.get("task", {})
    return Devices(
        gpus=gpus,
        tpu=tpu,
        workers=max(workers, 1),
        task_type=task.get("type", "chief"),
        task_index=int(task.get("index", 0)),
        has_chief=bool(cluster.get("chief")),
    )


def choose(devices: Devices) -> str:
    """The strategy name for these devices (see the module docstring)."""
    if devices.workers > 1:
        return MULTI_WORKER
    if devices.tpu:
        return TPU
    if devices.gpus > 1:
        return MIRRORED
    if devices.gpus == 1:
        return ONE_DEVICE
    return DEFAULT


def _has_tpu() -> bool:
    # Vertex AI sets TPU_NAME on TPU machines, or TensorFlow sees local TPU devices.
    # Physical, not logical, devices: listing logical ones would start TensorFlow's
    # runtime, after which MultiWorkerMirroredStrategy can no longer be created.
    return bool(os.environ.get("TPU_NAME") or tf.config.list_physical_devices("TPU"))


def current_devices() -> Devices:
    """The devices of this process, from TF_CONFIG and TensorFlow's device list."""
    return devices_from(
        os.environ.get("TF_CONFIG"), len(tf.config.list_physical_devices("GPU")), _has_tpu()
    )


def strategy(devices: Devices | None = None) -> tf.distribute.Strategy:
    """Creates the strategy that `choose` names for `devices` (default: this process's)."""
    devices = devices or current_devices()
    name = choose(devices)
    if name == MULTI_WORKER:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == TPU:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", "local")
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == MIRRORED:
        return tf.distribute.MirroredStrategy()
    if name == ONE_DEVICE:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def output_dir(path: str, devices: Devices) -> str:
    """Where this worker saves: `path` on the chief, a scratch directory elsewhere.

    Under MultiWorkerMirroredStrategy every worker must take part in saving (the
    save runs collective ops), but only the chief's copy is kept.
    """
    if devices.is_chief:
        return path
    return tempfile.mkdtemp(prefix=f"worker-{devices.task_index}-")
