"""A served pushed model whose requests are logged, for the monitor's end-to-end test."""

from __future__ import annotations

import portpicker

from serving.client import ServingClient
from serving.config import ModelConfig, RequestLogConfig
from serving.server import ModelServer, ServerOptions


def serve_and_log(serving_dir: str, rows: list[dict], log_dir) -> str:
    """Serves the pushed model with every request logged under `log_dir`, sends `rows`
    through gRPC Predict (serving_raw) in small batches, stops; returns `log_dir`."""
    log = RequestLogConfig(str(log_dir / "requests"), sampling_rate=1.0)
    model = ModelConfig("penguins", serving_dir, request_log=log)
    options = ServerOptions(grpc_port=portpicker.pick_unused_port(), rest_port=0)
    server = ModelServer([model], options).start()
    try:
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            client.wait_until_available("penguins", timeout_s=60)
            for start in range(0, len(rows), 8):
                client.predict_rows("penguins", rows[start : start + 8])
    finally:
        server.stop()
    assert server.request_log_counts()["penguins"].written == -(-len(rows) // 8)
    return str(log_dir)
