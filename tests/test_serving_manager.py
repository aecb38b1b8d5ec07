"""Model manager (versions, policies, labels, hot swap), batching and config parsing."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import portpicker
import pytest
import tensorflow as tf
from serving_testlib import example, save_version
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.batching import Batcher
from serving.config import (
    BatchingConfig,
    ModelConfig,
    ServingConfigError,
    parse_batching_parameters,
    parse_models_config,
)
from serving.errors import ServingError
from serving.manager import ModelManager
from serving.servable import Signature
from serving.server import ModelServer, ServerOptions
from serving.warmup import write_warmup_requests

State = get_model_status_pb2.ModelVersionStatus.State


def _states(manager, name):
    return {s.version: State.Name(s.state) for s in manager.status(name)}


def test_models_config_policies_and_labels(tmp_path):
    for version in (1, 2, 3):
        save_version(str(tmp_path / "m"), version, scale=float(version))
    text = f"""
    model_config_list {{
      config {{ name: "all" base_path: "{tmp_path / "m"}" model_version_policy {{ all {{}} }} }}
      config {{
        name: "pick" base_path: "{tmp_path / "m"}"
        model_version_policy {{ specific {{ versions: 1 versions: 3 }} }}
        version_labels {{ key: "stable" value: 1 }}
        version_labels {{ key: "canary" value: 3 }}
      }}
      config {{ name: "latest" base_path: "{tmp_path / "m"}" }}
    }}"""
    manager = ModelManager(parse_models_config(text))
    manager.poll_once()
    assert _states(manager, "all") == {1: "AVAILABLE", 2: "AVAILABLE", 3: "AVAILABLE"}
    assert _states(manager, "pick") == {1: "AVAILABLE", 3: "AVAILABLE"}
    assert _states(manager, "latest") == {3: "AVAILABLE"}
    assert manager.servable("pick", label="stable").version == 1
    assert manager.servable("pick", label="canary").version == 3
    assert manager.servable("pick").version == 3
    with pytest.raises(ServingError, match="Specific\\(pick, 2\\)"):
        manager.servable("pick", version=2)
    manager.stop()
    assert set(_states(manager, "all").values()) == {"END"}


def test_new_version_replaces_old_and_broken_one_keeps_old(tmp_path):
    base = tmp_path / "m"
    save_version(str(base), 4)
    manager = ModelManager([ModelConfig("m", str(base))])
    manager.poll_once()
    (base / "5").mkdir()
    (base / "5" / "saved_model.pb").write_bytes(b"not a SavedModel")
    manager.poll_once()
    status = {s.version: s for s in manager.status("m")}
    assert status[5].state == State.END and "loading" in status[5].error
    assert status[4].state == State.AVAILABLE
    assert manager.servable("m").version == 4
    save_version(str(base), 6)
    manager.poll_once()
    assert _states(manager, "m")[6] == "AVAILABLE"
    assert _states(manager, "m")[4] == "END"
    manager.stop()


def test_failing_warmup_keeps_version_from_serving(tmp_path):
    base = tmp_path / "m"
    path = save_version(str(base), 1)
    write_warmup_requests(path, [b"not a tf.Example"], "m", num_requests=2)
    manager = ModelManager([ModelConfig("m", str(base))])
    manager.poll_once()
    (status,) = manager.status("m")
    assert status.state == State.END
    assert "warmup request 0 (predict_log) failed" in status.error
    with pytest.raises(ServingError, match="Latest\\(m\\)"):
        manager.servable("m")


def test_hot_swap_under_concurrent_requests_loses_none(tmp_path):
    base = tmp_path / "m"
    save_version(str(base), 1, scale=1.0)
    options = ServerOptions(
        grpc_port=portpicker.pick_unused_port(), rest_port=0, poll_interval_s=0.05
    )
    with ModelServer([ModelConfig("m", str(base))], options) as server:
        from serving.client import ServingClient

        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            client.wait_until_available("m", timeout_s=30)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example(1.0, "red")]))
        sent = threading.Semaphore(0)
        errors, versions = [], []

        def call(_):
            sent.release()
            try:
                versions.append(stub.Predict(request, timeout=10).model_spec.version.value)
            except grpc.RpcError as err:
                errors.append(err)

        with ThreadPoolExecutor(8) as pool:
            results = pool.map(call, range(2000))
            for _ in range(300):
                sent.acquire()
            save_version(str(base), 2, scale=3.0)
            list(results)
        channel.close()
        final = {s.version: s.state for s in server.manager.status("m")}
    assert errors == []
    assert len(versions) == 2000
    assert {1, 2} <= set(versions)
    assert versions.index(2) > 0 and 1 not in versions[versions.index(2) + 50 :]
    assert final == {1: State.END, 2: State.AVAILABLE}


def _doubling_signature(calls):
    def function(x):
        calls.append(int(x.shape[0]))
        return {"y": x * 2}

    return Signature("s", {"x": tf.TensorSpec([None], tf.float32)}, {"y": None}, function)


def test_batcher_merges_concurrent_requests_with_same_answers():
    calls = []
    signature = _doubling_signature(calls)
    batcher = Batcher(
        BatchingConfig(max_batch_size=16, batch_timeout_micros=20_000, num_batch_threads=1)
    )
    inputs = [np.array([i, i + 0.5], dtype=np.float32) for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        outputs = list(pool.map(lambda x: batcher(signature, {"x": x}), inputs))
    batcher.close()
    for x, out in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(out["y"], x * 2)
    assert sum(calls) == 48
    assert max(calls) <= 16
    assert len(calls) < 24


def test_batcher_batches_same_shapes_together():
    calls = []

    def function(x):
        calls.append(tuple(x.shape))
        return {"y": x * 2}

    signature = Signature(
        "s", {"x": tf.TensorSpec([None, None], tf.float32)}, {"y": None}, function
    )
    batcher = Batcher(
        BatchingConfig(max_batch_size=8, batch_timeout_micros=20_000, num_batch_threads=1)
    )
    inputs = [np.full((1, 2 + i % 2), i, dtype=np.float32) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        outputs = list(pool.map(lambda x: batcher(signature, {"x": x}), inputs))
    batcher.close()
    for x, out in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(out["y"], x * 2)
    for width in (2, 3):
        assert sum(rows for rows, w in calls if w == width) == 8
    assert len(calls) < 16


def test_batcher_full_queue_is_unavailable():
    started, release = threading.Event(), threading.Event()

    def function(x):
        started.set()
        release.wait(10)
        return {"y": x}

    signature = Signature("s", {"x": tf.TensorSpec([None], tf.float32)}, {"y": None}, function)
    batcher = Batcher(BatchingConfig(max_batch_size=1, num_batch_threads=1, max_enqueued_batches=1))
    x = np.zeros([1], np.float32)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(batcher, signature, {"x": x})
        assert started.wait(10)
        queued = pool.submit(batcher, signature, {"x": x})
        while not batcher._pending["s"].tasks:  # the second call is waiting in the queue
            time.sleep(0.01)
        with pytest.raises(ServingError, match="queue for signature s is full") as err:
            batcher(signature, {"x": x})
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        release.set()
        assert running.result()["y"].shape == queued.result()["y"].shape == (1,)
    batcher.close()


def test_batching_on_answers_like_batching_off(tmp_path):
    base = tmp_path / "m"
    save_version(str(base), 1, scale=1.5)
    batch = [example(float(i) / 7, "red" if i % 2 else "blue") for i in range(32)]

    def answers(batching):
        manager = ModelManager([ModelConfig("m", str(base))], batching)
        manager.poll_once()
        servable = manager.servable("m")
        with ThreadPoolExecutor(16) as pool:
            results = list(
                pool.map(
                    lambda e: servable.run("", {"examples": np.array([e], dtype=object)})[1], batch
                )
            )
        manager.stop()
        return np.concatenate([r["scores"] for r in results])

    on = answers(BatchingConfig(max_batch_size=8, batch_timeout_micros=5000, num_batch_threads=2))
    np.testing.assert_allclose(on, answers(None), rtol=1e-6)


def test_batching_parameters_parse_and_reject_unknown():
    config = parse_batching_parameters(
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 500 }\n"
        "num_batch_threads { value: 2 }\npad_variable_length_inputs { value: true }\n"
    )
    assert config == BatchingConfig(
        max_batch_size=32, batch_timeout_micros=500, num_batch_threads=2
    )
    with pytest.raises(ServingConfigError, match="batching.txt: max_batch_sise: unknown parameter"):
        parse_batching_parameters("max_batch_sise { value: 3 }", source="batching.txt")
    with pytest.raises(ServingConfigError, match="expected a positive integer"):
        parse_batching_parameters("max_batch_size { value: 0 }")


def test_models_config_errors_name_file_and_key():
    with pytest.raises(ServingConfigError, match="models.config: config\\[m\\].base_path: missing"):
        parse_models_config('model_config_list { config { name: "m" } }')
    with pytest.raises(ServingConfigError, match="model_config_list"):
        parse_models_config("model_config_list { config { nam: 1 } }")
