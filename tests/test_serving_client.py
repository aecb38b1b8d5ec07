"""The client library (retries, deadlines) and the CLI (serve, predict) against real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import portpicker
import pytest
import tensorflow as tf
from serving_testlib import CLASS_NAMES, example, save_model, save_version
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from serving.cli import (
    _parser,
    format_predictions,
    main,
    read_rows,
    real_server_command,
    serve_command,
)
from serving.client import RetryPolicy, ServingClient

REPO = Path(__file__).resolve().parent.parent


class _FlakyModelService(model_service_pb2_grpc.ModelServiceServicer):
    """Fails the first `failures` calls with `code`, sleeping `delay_s` on each call."""

    def __init__(self, failures: int, code: grpc.StatusCode, delay_s: float = 0.0):
        self.calls, self.failures, self.code, self.delay_s = 0, failures, code, delay_s

    def GetModelStatus(self, request, context):
        self.calls += 1
        time.sleep(self.delay_s)
        if self.calls <= self.failures:
            context.abort(self.code, "try again")
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.add(version=7, state=30)
        return response


@pytest.fixture
def fake_server():
    servers = []

    def start(service):
        server = grpc.server(futures.ThreadPoolExecutor(4))
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


def test_retries_unavailable_with_backoff(fake_server):
    service = _FlakyModelService(failures=2, code=grpc.StatusCode.UNAVAILABLE)
    retry = RetryPolicy(max_attempts=4, initial_backoff_s=0.01)
    with ServingClient(fake_server(service), retry=retry) as client:
        assert [s.version for s in client.get_model_status("m")] == [7]
    assert service.calls == 3


def test_does_not_retry_other_errors(fake_server):
    service = _FlakyModelService(failures=1, code=grpc.StatusCode.INVALID_ARGUMENT)
    client = ServingClient(fake_server(service), retry=RetryPolicy(initial_backoff_s=0.01))
    with client, pytest.raises(grpc.RpcError) as caught:
        client.get_model_status("m")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert service.calls == 1


def test_every_call_has_a_deadline(fake_server):
    service = _FlakyModelService(failures=0, code=grpc.StatusCode.OK, delay_s=1.0)
    started = time.monotonic()
    with (
        ServingClient(fake_server(service), timeout_s=0.2) as client,
        pytest.raises(grpc.RpcError) as caught,
    ):
        client.get_model_status("m")
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 0.9


def test_real_server_command_mirrors_flags():
    args = _parser().parse_args(
        [
            "serve",
            "--model-name",
            "penguins",
            "--model-base-path",
            "out/penguins",
            "--enable-batching",
            "--batching-parameters",
            "b.txt",
            "--grpc-port",
            "9000",
            "--rest-port",
            "9001",
            "--tensorflow-intra-op-parallelism",
            "4",
        ]
    )
    command = real_server_command(args, "/usr/bin/tensorflow_model_server")
    assert command[:3] == [
        "/usr/bin/tensorflow_model_server",
        "--port=9000",
        "--rest_api_port=9001",
    ]
    assert "--model_name=penguins" in command
    assert f"--model_base_path={os.path.abspath('out/penguins')}" in command
    assert f"--batching_parameters_file={os.path.abspath('b.txt')}" in command
    assert "--enable_batching=true" in command
    # Only the TF threading flags given are passed on; the rest stay TF Serving's defaults.
    assert "--tensorflow_intra_op_parallelism=4" in command
    assert not any(flag.startswith("--tensorflow_inter_op") for flag in command)
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--tensorflow-inter-op-parallelism", "-1"])


def test_read_rows_and_format_predictions(tmp_path):
    (tmp_path / "rows.csv").write_text("x,color,species\n0.5,red,adelie\n-1,blue,gentoo\n")
    (tmp_path / "rows.json").write_text(json.dumps({"instances": [{"x": 0.5, "color": "red"}]}))
    assert read_rows(str(tmp_path / "rows.csv"))[1] == {
        "x": "-1",
        "color": "blue",
        "species": "gentoo",
    }
    assert read_rows(str(tmp_path / "rows.json")) == [{"x": 0.5, "color": "red"}]
    outputs = {"classes": np.array([[b"a", b"b"]]), "scores": np.array([[0.25, 0.75]])}
    assert format_predictions(outputs) == [{"class": "b", "scores": {"a": 0.25, "b": 0.75}}]
    assert format_predictions({"outputs": np.array([[1.5]])}) == [{"outputs": [1.5]}]


def _stop(process):
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_then_predict_from_csv(tmp_path, capsys):
    save_version(str(tmp_path / "serving" / "m"), 1700000000, scale=2.0)
    grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        serve_command(
            "m", str(tmp_path / "serving" / "m"), grpc_port, rest_port=rest_port, embedded=True
        ),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with ServingClient(f"127.0.0.1:{grpc_port}") as client:
            assert client.wait_until_available("m", timeout_s=60) == 1700000000
        (tmp_path / "rows.csv").write_text("x,color,species\n0.5,red,adelie\n-1,blue,gentoo\n")
        capsys.readouterr()
        assert (
            main(
                [
                    "predict",
                    "--model-name",
                    "m",
                    "--input",
                    str(tmp_path / "rows.csv"),
                    "--address",
                    f"127.0.0.1:{grpc_port}",
                ]
            )
            == 0
        )
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        assert _stop(process) == 0
    reference = tf.saved_model.load(save_model(str(tmp_path / "ref"), scale=2.0))
    expected = reference.signatures["serving_default"](
        examples=tf.constant([example(0.5, "red"), example(-1.0, "blue")])
    )["scores"].numpy()
    assert [p["row"] for p in printed] == [0, 1]
    np.testing.assert_allclose(
        [[p["scores"][c] for c in CLASS_NAMES] for p in printed], expected, atol=1e-6
    )
    assert printed[0]["class"] == CLASS_NAMES[int(np.argmax(expected[0]))]
    assert "version 1700000000: AVAILABLE" in (tmp_path / "serve.log").read_text()
