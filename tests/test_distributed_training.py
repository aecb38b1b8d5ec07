"""The Trainer's run_fn under MultiWorkerMirroredStrategy: two workers on loopback vs one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_kubeflow_local_run import compile_local

from kubeflow import local_executor
from pipeline import distribution
from pipeline.pipeline import custom_config

WORKER = Path(__file__).with_name("distributed_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    """Runs the compiled pipeline up to Transform (harness) and returns the worker args."""
    tmp = tmp_path_factory.mktemp("dist")
    spec, root, _ = compile_local(tmp)
    results = local_executor.run_pipeline(spec, root, until="Transform")
    outputs = results["Transform"].output.artifacts
    from kubeflow_testlib import FAST, load

    config = load(tmp, FAST, {"training": {"epochs": 30, "batch_size": 16}})
    return tmp, {
        "examples": outputs["transformed_examples"].artifacts[0].uri,
        "transform_graph": outputs["transform_graph"].artifacts[0].uri,
        "custom_config": custom_config(config, "test"),
    }


def _start(args: dict, out: Path, tf_config: dict | None) -> subprocess.Popen:
    out.mkdir(parents=True)
    (out / "args.json").write_text(json.dumps(args))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    log = open(out / "log.txt", "w")  # noqa: SIM115 - closed when the process ends
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(out / "args.json"), str(out / "result.json")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait(process: subprocess.Popen, out: Path) -> None:
    code = process.wait(timeout=600)
    assert code == 0, (out / "log.txt").read_text()[-4000:]


@pytest.mark.e2e
def test_two_workers_match_one(transformed):
    tmp, args = transformed
    single = _start(args, tmp / "single", None)
    _wait(single, tmp / "single")
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [
        _start(
            args, tmp / f"worker{i}", {"cluster": cluster, "task": {"type": "worker", "index": i}}
        )
        for i in range(2)
    ]
    for i, process in enumerate(workers):
        _wait(process, tmp / f"worker{i}")
    one = json.loads((tmp / "single" / "result.json").read_text())
    two = json.loads((tmp / "worker0" / "result.json").read_text())
    assert not (tmp / "worker1" / "result.json").exists()
    assert not (tmp / "worker1" / "model").exists(), "only the chief keeps its model"
    assert (one["strategy"], two["strategy"]) == (distribution.DEFAULT, distribution.MULTI_WORKER)
    assert two["workers"] == 2 and two["serving_model"]
    assert two["accuracy"] >= 0.9 and one["accuracy"] >= 0.9
    assert abs(two["accuracy"] - one["accuracy"]) <= 0.05


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (distribution.Devices(), distribution.DEFAULT),
        (distribution.Devices(gpus=1), distribution.ONE_DEVICE),
        (distribution.Devices(gpus=4), distribution.MIRRORED),
        (distribution.Devices(tpu=True), distribution.TPU),
        (distribution.Devices(gpus=2, workers=3), distribution.MULTI_WORKER),
    ],
)
def test_strategy_choice(devices, expected):
    assert distribution.choose(devices) == expected


def test_tf_config_decides_workers_and_chief():
    tf_config = json.dumps(
        {
            "cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
            "task": {"type": "worker", "index": 0},
        }
    )
    devices = distribution.devices_from(tf_config, gpus=0, tpu=False)
    assert devices.workers == 3 and not devices.is_chief
    assert distribution.devices_from(None, 1, False) == distribution.Devices(gpus=1)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribution.devices_from("{not json", 0, False)
