"""Request logging in TF Serving's format: sampled `tensorflow.serving.PredictionLog` records
in TFRecord files, the log a TF Serving deployment (or Vertex request-response logging)
collects, so the monitor reads either.

A request thread only draws the sample and puts (request, response) on a bounded queue; one
writer thread builds the PredictionLog, serializes it and writes it, rotating files at
`max_file_bytes`. A full queue drops the record and a failed write drops it too; both are
counted, and neither slows nor fails a request.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from serving.config import RequestLogConfig

_log = logging.getLogger(__name__)
# The PredictionLog field each logged method fills.
LOG_FIELDS = {
    "Predict": "predict_log",
    "Classify": "classify_log",
    "Regress": "regress_log",
    "MultiInference": "multi_inference_log",
}
LOG_SUFFIX = ".tfrecord"
# What one TFRecord record adds to its payload: length, its CRC, the payload's CRC.
_RECORD_FRAMING_BYTES = 16
# The writer flushes at least this often while requests keep coming, so a reader sees them.
_FLUSH_INTERVAL_S = 1.0
_STOP = object()
_READ_BATCH = 1024


@dataclasses.dataclass
class LogCounts:
    """What happened to the requests one logger saw.

    sampled: requests the sample picked; written: records on disk; dropped_queue_full:
    sampled while the writer was behind; dropped_write_error: lost to a failed write.
    """

    sampled: int = 0
    written: int = 0
    dropped_queue_full: int = 0
    dropped_write_error: int = 0
    files: int = 0


class RequestLogger:
    """Logs one model's sampled requests; start() before log(), stop() to flush and close."""

    def __init__(self, config: RequestLogConfig, seed: int | None = None):
        self.config = config
        self._queue: queue.Queue = queue.Queue(maxsize=config.max_queued)
        self._random = random.Random(seed)
        self._counts = LogCounts()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._files = _RotatingFiles(config)

    def start(self) -> RequestLogger:
        """Starts the writer thread; returns self."""
        self._thread = threading.Thread(target=self._write_loop, name="request-log", daemon=True)
        self._thread.start()
        return self

    def log(self, method: str, request, response) -> bool:
        """Queues one answered request for writing if the sample picks it; never raises and
        never waits.

        Args:
          method: the PredictionService method (a key of LOG_FIELDS).
          request: its request proto, not changed after this call.
          response: the response sent, whose model_spec names the version and signature.

        Returns:
          Whether the request was queued.
        """
        return self.log_later(method, lambda: (request, response))

    def log_later(self, method: str, build: Callable[[], tuple]) -> bool:
        """As log(), for a caller without protos (REST): `build()` makes (request, response)
        on the writer thread, only for a sampled request; what it reads must not change."""
        if self._random.random() >= self.config.sampling_rate:
            return False
        with self._lock:
            self._counts.sampled += 1
        try:
            self._queue.put_nowait((method, build, time.time()))
        except queue.Full:
            with self._lock:
                self._counts.dropped_queue_full += 1
                dropped = self._counts.dropped_queue_full
            if dropped == 1 or dropped % 1000 == 0:
                _log.warning(
                    "request log %s: the writer is behind, %d records dropped so far",
                    self.config.filename_prefix,
                    dropped,
                )
            return False
        return True

    def counts(self) -> LogCounts:
        """A snapshot of the counts."""
        with self._lock:
            return dataclasses.replace(self._counts)

    def stop(self) -> LogCounts:
        """Writes what is queued, closes the file and returns the counts."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        counts = self.counts()
        _log.info("request log %s: %s", self.config.filename_prefix, counts)
        return counts

    def _write_loop(self) -> None:
        last_flush = time.monotonic()
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    self._close()
                    return
                self._write(item)
                if self._queue.empty() or time.monotonic() - last_flush > _FLUSH_INTERVAL_S:
                    self._files.flush()
                    last_flush = time.monotonic()
            finally:
                self._queue.task_done()

    def _write(self, item) -> None:
        method, build, timestamp = item
        try:
            record = prediction_log(method, *build(), self.config, timestamp)
            opened = self._files.write(record.SerializeToString())
        except Exception as err:  # noqa: BLE001 - a lost record is counted, serving goes on
            with self._lock:
                self._counts.dropped_write_error += 1
            _log.error("request log %s: a record was lost: %s", self.config.filename_prefix, err)
            return
        with self._lock:
            self._counts.written += 1
            self._counts.files += opened

    def _close(self) -> None:
        try:
            self._files.close()
        except Exception as err:  # noqa: BLE001 - the server is stopping; say what was lost
            _log.error("request log %s: closing failed: %s", self.config.filename_prefix, err)


def prediction_log(
    method: str, request, response, config: RequestLogConfig, timestamp: float
) -> prediction_log_pb2.PredictionLog:
    """The PredictionLog of one answered request, as TF Serving writes it.

    Raises:
      KeyError: `method` is not one TF Serving logs.
    """
    record = prediction_log_pb2.PredictionLog()
    metadata = record.log_metadata
    spec = response.results[0].model_spec if method == "MultiInference" else response.model_spec
    metadata.model_spec.CopyFrom(spec)
    metadata.sampling_config.sampling_rate = config.sampling_rate
    metadata.saved_model_tags.append("serve")
    metadata.timestamp_secs = int(timestamp)
    entry = getattr(record, LOG_FIELDS[method])
    entry.request.CopyFrom(request)
    entry.response.CopyFrom(response)
    return record


class _RotatingFiles:
    """TFRecord files `<prefix>-<start>-<pid>-<n>.tfrecord`, the next one past max_file_bytes."""

    def __init__(self, config: RequestLogConfig):
        self._config = config
        self._stem = f"{config.filename_prefix}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self._number = 0
        self._writer: tf.io.TFRecordWriter | None = None
        self._bytes = 0

    def write(self, payload: bytes) -> int:
        """Writes one record; returns 1 if it opened a new file for it, else 0."""
        opened = 0
        if self._writer is not None and self._bytes >= self._config.max_file_bytes:
            self.close()
        if self._writer is None:
            # tf.io.gfile: a prefix may be a bucket (gs://...) as well as a local path.
            folder = os.path.dirname(self._stem)
            if folder:
                tf.io.gfile.makedirs(folder)
            self._number += 1
            self._writer = tf.io.TFRecordWriter(f"{self._stem}-{self._number:05d}{LOG_SUFFIX}")
            self._bytes = 0
            opened = 1
        self._writer.write(payload)
        self._bytes += len(payload) + _RECORD_FRAMING_BYTES
        return opened

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()


def log_files(prefix_or_dir: str) -> list[str]:
    """The log files of a filename prefix (or every one in a folder, local or gs://), oldest
    first."""
    if tf.io.gfile.isdir(prefix_or_dir):
        folder, stem = prefix_or_dir, ""
    else:
        folder, stem = os.path.split(prefix_or_dir)
        folder = folder or "."
    if not tf.io.gfile.isdir(folder):
        return []
    names = [
        n for n in tf.io.gfile.listdir(folder) if n.startswith(stem) and n.endswith(LOG_SUFFIX)
    ]
    return sorted(os.path.join(folder, n) for n in names)


def read_prediction_logs(path: str) -> Iterator[prediction_log_pb2.PredictionLog]:
    """The PredictionLog records of one TFRecord file.

    Raises:
      ValueError: the file is truncated or corrupt, or holds something else than
        PredictionLog records; the message names the file and the record.
    """
    read = 0
    try:
        # Batches: tf.data's per-element cost dominates when records are small (one row each).
        for batch in tf.data.TFRecordDataset(path).batch(_READ_BATCH).as_numpy_iterator():
            for payload in batch:
                yield prediction_log_pb2.PredictionLog.FromString(payload)
                read += 1
    except tf.errors.DataLossError as err:
        raise ValueError(
            f"{path}: truncated or corrupt after {read} records: {err.message.splitlines()[0]}"
        ) from err
    except DecodeError as err:
        raise ValueError(
            f"{path}: record {read} is not a tensorflow.serving.PredictionLog: {err}"
        ) from err
