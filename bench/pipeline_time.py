"""Wall time of the pipeline, cold (empty output root) and warm (everything cached), per component.

    scripts/in-env python -m bench.pipeline_time [--config configs/penguins.yaml]

Each run is a fresh `python -m pipeline.cli run` process, so the figures include
interpreter start and imports, as `make run` does. The reference is TFX's own
penguin example (no tuning) on this stack: about 75 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TFX_PENGUIN_EXAMPLE_SECONDS = 75.0

# What the time of each component is made of, for the explanation column.
WHY = {
    "CsvExampleGen": "Beam job: parse CSV, hash-split, write TFRecords",
    "StatisticsGen": "Beam job: TFDV statistics on both splits",
    "ImportSchemaGen": "copies the curated schema",
    "SchemaGen": "infers the schema from statistics",
    "ExampleValidator": "compares statistics with the schema",
    "AnomalyGate": "reads the anomalies",
    "Transform": "TFT: traces preprocessing_fn, analyze pass, transform pass, writes the graph",
    "Tuner": "trials x epochs of tf_keras fit on cached data",
    "Trainer": "final fit with best hyperparameters + SavedModel export (3 signatures)",
    "Quantization": "int8 rebuild, TFLite conversion x2, eval + latency of 4 models",
    "latest_blessed_model_resolver": "ML Metadata query",
    "Evaluator": "TFMA Beam job: loads the model(s), computes metrics on eval split, per slice",
    "SliceGate": "reads TFMA's per-slice metrics, checks the slice gates",
    "InfraValidation": "starts a model server, waits AVAILABLE, replays warmup requests",
    "Pusher": "copies the model into the serving directory",
}


def run_once(config: str, output_root: str) -> tuple[float, dict]:
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            "--config",
            config,
            "--output-root",
            output_root,
        ],
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    summary_path = Path(output_root) / "summary.json"
    if proc.returncode != 0 or not summary_path.exists():
        raise SystemExit(
            f"pipeline run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return seconds, json.loads(summary_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/penguins.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as root:
        cold_wall, cold = run_once(args.config, root)
        warm_wall, warm = run_once(args.config, root)
    print(f"{'component':<32}{'cold s':>8}{'warm s':>8}  what takes the time")
    for name, c in cold["components"].items():
        w = warm["components"].get(name, {})
        note = WHY.get(name, "")
        if name == "Tuner" and cold.get("tuner"):
            trials = cold["tuner"]["trials"]
            note += f" ({trials} trials, {c['seconds'] / max(trials, 1):.1f} s/trial)"
        print(f"{name:<32}{c['seconds']:>8.1f}{w.get('seconds', 0):>8.1f}  {note}")
    components_cold = sum(c["seconds"] for c in cold["components"].values())
    print(
        f"{'components total':<32}{components_cold:>8.1f}{sum(c['seconds'] for c in warm['components'].values()):>8.1f}"
    )
    print(
        f"{'process start, imports, staging':<32}{cold_wall - components_cold:>8.1f}{warm_wall - sum(c['seconds'] for c in warm['components'].values()):>8.1f}"
    )
    print(f"{'wall (python -m pipeline.cli run)':<32}{cold_wall:>8.1f}{warm_wall:>8.1f}")
    cached = [n for n, c in warm["components"].items() if c["cached"]]
    print(
        f"warm run: {len(cached)}/{len(warm['components'])} components cached; speed-up {cold_wall / warm_wall:.1f}x"
    )
    print(
        f"reference: TFX penguin example, no tuning, ~{TFX_PENGUIN_EXAMPLE_SECONDS:.0f} s; "
        f"this cold run with {cold['tuner']['trials']} Bayesian trials: {cold_wall:.0f} s "
        f"= {cold_wall / TFX_PENGUIN_EXAMPLE_SECONDS:.2f}x (target <= 2x)"
    )


if __name__ == "__main__":
    main()
