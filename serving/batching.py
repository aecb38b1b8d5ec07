"""Server-side batching: concurrent requests to one signature are run as one call.

Mirrors TF Serving's --enable_batching: a request waits up to batch_timeout_micros for others,
a batch holds at most max_batch_size rows, num_batch_threads batches run at once, and a full
queue answers UNAVAILABLE. A request larger than max_batch_size runs on its own.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future

import grpc
import numpy as np

from serving.config import BatchingConfig
from serving.errors import ServingError
from serving.servable import Runner, Signature, run_signature


@dataclasses.dataclass
class _Task:
    inputs: Mapping[str, np.ndarray]
    size: int
    future: Future

    def shape_key(self) -> tuple:
        return tuple((k, v.shape[1:]) for k, v in sorted(self.inputs.items()))


class Batcher:
    """A Runner that merges concurrent calls per signature; call close() to stop its threads."""

    def __init__(self, config: BatchingConfig, runner: Runner = run_signature):
        self._config = config
        self._runner = runner
        self._queues: dict[str, queue.Queue] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def __call__(
        self, signature: Signature, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        size = _batch_size(inputs)
        if size is None or size > self._config.max_batch_size:
            return self._runner(signature, inputs)
        tasks = self._queue(signature)
        if tasks is None:
            # Unloading: a request that already holds this servable still gets an answer.
            return self._runner(signature, inputs)
        task = _Task(inputs, size, Future())
        try:
            tasks.put_nowait(task)
        except queue.Full as err:
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE,
                f"The batch scheduling queue for signature {signature.name} is full",
            ) from err
        return task.future.result()

    def close(self) -> None:
        """Stops the batch threads after the queued batches have run."""
        with self._lock:
            self._closed = True
            for q in self._queues.values():
                for _ in range(self._config.num_batch_threads):
                    q.put(None)
        for thread in self._threads:
            thread.join()

    def _queue(self, signature: Signature) -> queue.Queue | None:
        with self._lock:
            if self._closed:
                return None
            if signature.name not in self._queues:
                limit = self._config.max_enqueued_batches * self._config.max_batch_size
                self._queues[signature.name] = queue.Queue(maxsize=limit)
                for index in range(self._config.num_batch_threads):
                    thread = threading.Thread(
                        target=self._work,
                        args=(signature, self._queues[signature.name]),
                        name=f"batch-{signature.name}-{index}",
                        daemon=True,
                    )
                    thread.start()
                    self._threads.append(thread)
            return self._queues[signature.name]

    def _work(self, signature: Signature, tasks: queue.Queue) -> None:
        carried = None
        while True:
            first = carried if carried is not None else tasks.get()
            if first is None:
                return
            batch, carried, stop = self._collect(first, tasks)
            self._run(signature, batch)
            if stop:
                return

    def _collect(self, first: _Task, tasks: queue.Queue) -> tuple[list[_Task], _Task | None, bool]:
        """Returns the batch, the task that starts the next one, and whether to stop."""
        batch, size = [first], first.size
        deadline = time.monotonic() + self._config.batch_timeout_micros / 1e6
        while size < self._config.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                task = tasks.get(timeout=remaining) if remaining > 0 else tasks.get_nowait()
            except queue.Empty:
                break
            if task is None:
                return batch, None, True
            if (
                task.shape_key() != first.shape_key()
                or size + task.size > self._config.max_batch_size
            ):
                return batch, task, False
            batch.append(task)
            size += task.size
        return batch, None, False

    def _run(self, signature: Signature, tasks: list[_Task]) -> None:
        try:
            merged = {k: np.concatenate([t.inputs[k] for t in tasks]) for k in tasks[0].inputs}
            outputs = self._runner(signature, merged)
        except Exception as err:  # noqa: BLE001 - every waiting request must get the error
            for task in tasks:
                task.future.set_exception(err)
            return
        offset = 0
        for task in tasks:
            task.future.set_result(
                {k: v[offset : offset + task.size] if v.ndim else v for k, v in outputs.items()}
            )
            offset += task.size


def _batch_size(inputs: Mapping[str, np.ndarray]) -> int | None:
    sizes = {v.shape[0] for v in inputs.values() if v.ndim}
    return sizes.pop() if len(sizes) == 1 else None
