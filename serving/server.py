"""The embedded model server: gRPC and REST front ends over one ModelManager."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from concurrent import futures

import grpc

from serving.config import BatchingConfig, ModelConfig, RequestLimits
from serving.grpc_service import add_services
from serving.logging_requests import LogCounts, RequestLogger
from serving.manager import ModelManager
from serving.rest import RestServer

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """How the server listens. A port of 0 picks a free one for gRPC and turns REST off."""

    host: str = "127.0.0.1"
    grpc_port: int = 8500
    rest_port: int = 8501
    limits: RequestLimits = RequestLimits()
    grpc_workers: int = 64
    poll_interval_s: float = 1.0


class ModelServer:
    """Serves `models` until stop(); use as a context manager in tests."""

    def __init__(
        self,
        models: Sequence[ModelConfig],
        options: ServerOptions = ServerOptions(),
        batching: BatchingConfig | None = None,
    ):
        self.options = options
        self.manager = ModelManager(models, batching, options.poll_interval_s)
        message_limits = [
            ("grpc.max_receive_message_length", options.limits.max_bytes),
            ("grpc.max_send_message_length", options.limits.max_bytes),
        ]
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=options.grpc_workers), options=message_limits
        )
        # Requests of models with a logging_config are logged (TF Serving's request logging).
        self.request_logs = {
            m.name: RequestLogger(m.request_log) for m in models if m.request_log is not None
        }
        add_services(self._grpc, self.manager, options.limits, self.request_logs)
        self.grpc_port = self._grpc.add_insecure_port(f"{options.host}:{options.grpc_port}")
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC to {options.host}:{options.grpc_port}")
        self._rest = None
        if options.rest_port:
            self._rest = RestServer(
                self.manager, options.host, options.rest_port, options.limits, self.request_logs
            )
        self.rest_port = self._rest.port if self._rest else 0

    def start(self) -> ModelServer:
        """Starts loading models and answering on both ports; returns self."""
        self.manager.start()
        for request_log in self.request_logs.values():
            request_log.start()
        self._grpc.start()
        _log.info("Running gRPC ModelServer at %s:%d", self.options.host, self.grpc_port)
        if self._rest:
            self._rest.start()
            _log.info("Exporting HTTP/REST API at %s:%d", self.options.host, self.rest_port)
        return self

    def stop(self, grace_s: float = 1.0) -> None:
        """Stops answering (in-flight calls get `grace_s`) and unloads every model."""
        if self._rest:
            self._rest.stop()
        self._grpc.stop(grace_s).wait()
        for request_log in self.request_logs.values():
            request_log.stop()
        self.manager.stop()

    def request_log_counts(self) -> dict[str, LogCounts]:
        """Per logged model: requests sampled, written and dropped so far."""
        return {name: log.counts() for name, log in self.request_logs.items()}

    def wait(self) -> None:
        """Blocks until the gRPC server terminates."""
        self._grpc.wait_for_termination()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
