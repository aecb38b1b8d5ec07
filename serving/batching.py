"""Server-side batching: concurrent requests to one signature are run as one call.

Mirrors TF Serving's --enable_batching: a request waits up to batch_timeout_micros for others,
a batch holds at most max_batch_size rows, num_batch_threads batches run at once, and a full
queue answers UNAVAILABLE. A request larger than max_batch_size runs on its own.
"""

from __future__ import annotations

import collections
import dataclasses
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
    deadline: float
    shape_key: tuple = dataclasses.field(init=False)

    def __post_init__(self):
        self.shape_key = tuple((k, v.shape[1:]) for k, v in sorted(self.inputs.items()))


class _Pending:
    """The calls waiting for one signature's batch threads, under one condition variable.

    A batch thread sleeps until the oldest call's deadline or until a full batch is pending,
    so waiting calls cost no wake-ups of their own (a queue.get per call would wake it each time).
    """

    def __init__(self, limit: int):
        self.tasks: collections.deque[_Task] = collections.deque()
        self.rows = 0
        self.limit = limit
        self.ready = threading.Condition()
        self.closed = False

    def take(self, max_rows: int) -> list[_Task]:
        """Removes and returns the oldest tasks of the oldest task's shape that fit in a batch."""
        first = self.tasks[0]
        batch, kept, rows = [], collections.deque(), 0
        for task in self.tasks:
            if task.shape_key == first.shape_key and rows + task.size <= max_rows:
                batch.append(task)
                rows += task.size
            else:
                kept.append(task)
        self.tasks, self.rows = kept, self.rows - rows
        return batch


class Batcher:
    """A Runner that merges concurrent calls per signature; call close() to stop its threads."""

    def __init__(self, config: BatchingConfig, runner: Runner = run_signature):
        self._config = config
        self._runner = runner
        self._pending: dict[str, _Pending] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def __call__(
        self, signature: Signature, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        size = _batch_size(inputs)
        if size is None or size > self._config.max_batch_size:
            return self._runner(signature, inputs)
        task = self._enqueue(signature, inputs, size)
        if task is None:
            # Unloading: a request that already holds this servable still gets an answer.
            return self._runner(signature, inputs)
        return task.future.result()

    def close(self) -> None:
        """Stops the batch threads after the queued batches have run."""
        with self._lock:
            self._closed = True
            pending = list(self._pending.values())
        for queue in pending:
            with queue.ready:
                queue.closed = True
                queue.ready.notify_all()
        for thread in self._threads:
            thread.join()

    def _enqueue(self, signature: Signature, inputs, size: int) -> _Task | None:
        queue = self._queue(signature)
        if queue is None:
            return None
        timeout_s = self._config.batch_timeout_micros / 1e6
        task = _Task(inputs, size, Future(), time.monotonic() + timeout_s)
        with queue.ready:
            if queue.closed:
                return None
            if len(queue.tasks) >= queue.limit:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"The batch scheduling queue for signature {signature.name} is full",
                )
            queue.tasks.append(task)
            queue.rows += size
            # Wake a batch thread to start the timeout, or to run a batch that is now full.
            if len(queue.tasks) == 1 or queue.rows >= self._config.max_batch_size:
                queue.ready.notify()
        return task

    def _queue(self, signature: Signature) -> _Pending | None:
        with self._lock:
            if self._closed:
                return None
            if signature.name not in self._pending:
                limit = self._config.max_enqueued_batches * self._config.max_batch_size
                self._pending[signature.name] = _Pending(limit)
                for index in range(self._config.num_batch_threads):
                    thread = threading.Thread(
                        target=self._work,
                        args=(signature, self._pending[signature.name]),
                        name=f"batch-{signature.name}-{index}",
                        daemon=True,
                    )
                    thread.start()
                    self._threads.append(thread)
            return self._pending[signature.name]

    def _work(self, signature: Signature, queue: _Pending) -> None:
        while True:
            batch = self._next_batch(queue)
            if batch is None:
                return
            self._run(signature, batch)

    def _next_batch(self, queue: _Pending) -> list[_Task] | None:
        """Waits for a full batch or the oldest task's deadline; None once closed and drained."""
        with queue.ready:
            while True:
                if queue.tasks:
                    wait_s = queue.tasks[0].deadline - time.monotonic()
                    if wait_s <= 0 or queue.rows >= self._config.max_batch_size or queue.closed:
                        break
                elif queue.closed:
                    return None
                else:
                    wait_s = None
                queue.ready.wait(wait_s)
            batch = queue.take(self._config.max_batch_size)
            if queue.tasks:
                queue.ready.notify()
            return batch

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
