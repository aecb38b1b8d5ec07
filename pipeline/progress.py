"""Progress of a local run: one line per component as it starts and ends, full logs to a file.

TFX's LocalDagRunner logs "Component X is running." / "is finished." through absl;
this handler turns those records into progress lines and per-component timings,
while the console stays free of TFX's INFO chatter (it goes to the log file).

Nothing here imports TensorFlow: the CLI names the run and its log file, and points
file descriptor 2 at that file, before TensorFlow's C++ start-up lines are written.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from absl import logging as absl_logging

from pipeline.config import PipelineConfig

_RUNNING = "Component %s is running."
_FINISHED = "Component %s is finished."
_CACHED = "A cached execution %d is used."


def new_run_id() -> str:
    """A run id: local start time to the millisecond and the process id.

    It names the run's `pipeline_run` context in ML Metadata and its log file, so
    runs started in the same second (by two processes, or one after the other)
    never share either.
    """
    now = datetime.datetime.now()
    return f"{now:%Y%m%d-%H%M%S}.{now.microsecond // 1000:03d}-{os.getpid()}"


def log_path(config: PipelineConfig, run_id: str) -> str:
    """`<output_root>/logs/<pipeline>-<run id>.log`: the full TFX/Beam/TensorFlow log of one run."""
    return str(Path(config.output_root) / "logs" / f"{config.pipeline_name}-{run_id}.log")


@contextlib.contextmanager
def native_stderr_to(path: str) -> Iterator[None]:
    """Points file descriptor 2 at `path`, and Python's `sys.stderr` at the terminal.

    TensorFlow's C++ code (oneDNN, CUDA probing, XLA) writes straight to fd 2, some
    of it while `tensorflow` is imported: enter this before that import. Messages
    the user must see (errors, the one-line failure reason) are written by Python
    to `sys.stderr`, which keeps writing to the original stderr.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    terminal = os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 2)
    os.close(log)
    saved = sys.stderr
    sys.stderr = open(  # noqa: SIM115 - closed below, before fd 2 is restored
        terminal,
        "w",
        buffering=1,
        encoding=saved.encoding,
        errors="backslashreplace",
        closefd=False,
    )
    try:
        yield
    finally:
        sys.stderr.close()
        sys.stderr = saved
        os.dup2(terminal, 2)
        os.close(terminal)


class ProgressHandler(logging.Handler):
    """Prints progress and records the wall time of each component."""

    def __init__(self, node_ids: Sequence[str] = (), stream: TextIO = sys.stdout):
        super().__init__(level=logging.INFO)
        self._order = list(node_ids)
        self._stream = stream
        self._current: str | None = None
        self._started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.cached: set[str] = set()

    def expect(self, node_ids: Sequence[str]) -> None:
        """The components of the run, in the order they will run (for "[i/n]")."""
        self._order = list(node_ids)

    @property
    def order(self) -> list[str]:
        return list(self._order)

    def _print(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == _RUNNING:
            node = record.args[0]
            self._current = node
            self._started[node] = time.monotonic()
            position = self._order.index(node) + 1 if node in self._order else "?"
            self._print(f"[{position}/{len(self._order)}] {node} ...")
        elif record.msg == _CACHED and self._current:
            self.cached.add(self._current)
        elif record.msg == _FINISHED:
            node = record.args[0]
            self.seconds[node] = time.monotonic() - self._started.get(node, time.monotonic())
            note = "cached" if node in self.cached else "done"
            self._print(f"      {node} {note} in {self.seconds[node]:.1f}s")

    def stop_current(self) -> None:
        """Records the time of the component that was running when the run stopped."""
        if self._current and self._current not in self.seconds:
            self.seconds[self._current] = time.monotonic() - self._started[self._current]

    @property
    def running(self) -> str | None:
        """The component that has started and not finished, if any."""
        return self._current if self._current not in self.seconds else None


class capture_progress:
    """Context manager: installs the progress handler and a log file for the run.

    `node_ids` may be empty when the capture starts before the pipeline is built;
    call `expect(node_ids)` on the handler it returns then.
    """

    def __init__(self, node_ids: Sequence[str], log_path: str, stream: TextIO = sys.stdout):
        self.handler = ProgressHandler(node_ids, stream)
        self._log_path = log_path
        self._file_handler: logging.Handler | None = None
        self._saved: tuple[int, int, bool] | None = None

    def __enter__(self) -> ProgressHandler:
        # TensorFlow's deprecation warnings from inside the components go to the file too.
        tf_logger = logging.getLogger("tensorflow")
        self._tf_saved = tf_logger.propagate, list(tf_logger.handlers)
        tf_logger.propagate = False
        tf_logger.handlers = []
        logger = logging.getLogger("absl")
        absl_handler = absl_logging.get_absl_handler()
        self._saved = (logger.level, absl_handler.level, logger.propagate)
        self._file_handler = logging.FileHandler(self._log_path)
        self._file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logger.setLevel(logging.INFO)
        # Something in the stack raises absl's level to WARNING mid-run (seen after
        # Transform), which would hide TFX's progress records; pin it at INFO while
        # the run is captured. The console is unaffected: propagation is off.
        original = logger.setLevel
        logger.setLevel = lambda level: original(min(logging._checkLevel(level), logging.INFO))
        absl_handler.setLevel(logging.WARNING)
        # Beam configures the root logger at INFO; keep TFX's INFO records in the file only.
        logger.propagate = False
        logger.addHandler(self.handler)
        logger.addHandler(self._file_handler)
        tf_logger.addHandler(self._file_handler)
        # Python warnings (deprecations in TF Lite, TFMA, Beam) are for developers: file only.
        logging.captureWarnings(True)
        warnings_logger = logging.getLogger("py.warnings")
        self._warnings_saved = warnings_logger.propagate, list(warnings_logger.handlers)
        warnings_logger.propagate = False
        warnings_logger.handlers = [self._file_handler]
        return self.handler

    def __exit__(self, *exc) -> None:
        logging.captureWarnings(False)
        warnings_logger = logging.getLogger("py.warnings")
        warnings_logger.propagate, warnings_logger.handlers = self._warnings_saved
        tf_logger = logging.getLogger("tensorflow")
        tf_logger.propagate, tf_logger.handlers = self._tf_saved
        logger = logging.getLogger("absl")
        logger.removeHandler(self.handler)
        logger.removeHandler(self._file_handler)
        self._file_handler.close()
        del logger.setLevel
        logger.setLevel(self._saved[0])
        logger.propagate = self._saved[2]
        absl_logging.get_absl_handler().setLevel(self._saved[1])
