"""Request logging and drift monitoring, measured (issue 12's numbers).

    scripts/in-env python -m bench.monitoring [--config configs/penguins.yaml] [--output-root DIR]

Needs the config's pushed model and its ML Metadata (`make run`). Prints:

1. Serving p50 latency of one-row gRPC Predict (serving_raw) at concurrency 1 with request
   logging off, at sampling 0.1 and at 1.0: three embedded servers in child processes on the
   same model taking turns request by request, in --rounds rounds, the overhead computed
   within each round against the goal of at most 10% at 0.1.
2. `monitor` on --records logged requests (100k): PredictionLog records of one-row Predict
   requests, penguins rows with their served predictions, written by the server's own
   RequestLogger; the monitor runs as `python -m pipeline.cli monitor` in a child process,
   timed, with its peak memory (max RSS).

With --retraining, only this instead (it needs no earlier run):

3. Warm start vs from scratch: the pipeline trains on the penguins of 2007, then on all of
   2007-2009 twice, warm-started from the 2007 model and from scratch (the same tuned
   hyperparameters: the Tuner's output is cached between the two). Per retrain: the Trainer's
   epochs (early stopping), fit seconds, and accuracy on the 2008-2009 birds of the eval split.
   --max-trials/--epochs shorten the config's tuner and training for a quick look.

With --derived N, only this instead (no run needed either):

4. The derived statistics of image, text and sequence features (pipeline/monitor_derived.py)
   on N Fashion-MNIST test images (PNG), N BBC News texts (repeated past the corpus's 2,225)
   and N FordA series: seconds for the statistics and for TFDV's statistics of them, values
   per second, and the process's peak memory.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RATES = (0.0, 0.1, 1.0)
OVERHEAD_GOAL = 0.10


def main() -> int:
    args = _parser().parse_args()
    if args.retraining:
        return _retraining(args)
    if args.derived:
        return _derived(args.derived)
    from pipeline import local_runner
    from pipeline.config import load_config
    from pipeline.data import read_source

    config = load_config(args.config, output_root=args.output_root)
    base_path = local_runner.serving_dir(config)
    rows = [r for r in csv.DictReader(io.StringIO(read_source("palmerpenguins")))]
    rows = [r for r in rows if "NA" not in r.values()]
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as workdir:
        rounds = _logging_overhead(config.model_name, base_path, rows, workdir, args)
        _report_overhead(rounds)
        if not args.records:
            return 0
        logs = Path(workdir) / "logs"
        seconds = _write_logs(config.model_name, base_path, rows, logs, args.records)
        print(f"\nwrote {args.records} logged requests in {seconds:.1f}s to {logs}")
        _monitor(args, logs)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "penguins.yaml"))
    parser.add_argument("--output-root", default=None, help="overrides outputs.root")
    parser.add_argument(
        "--records", type=int, default=100_000, help="logged requests to monitor (0: skip)"
    )
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--retraining", action="store_true", help="measure warm start vs from scratch only"
    )
    parser.add_argument(
        "--derived", type=int, default=0, help="measure derived statistics on this many values"
    )
    parser.add_argument("--max-trials", type=int, default=None, help="retraining: tuner trials")
    parser.add_argument("--epochs", type=int, default=None, help="retraining: training epochs")
    return parser


def _logging_overhead(name, base_path, rows, workdir, args) -> list[dict[float, float]]:
    """Per round, the p50 (ms) of each sampling rate."""
    import portpicker

    from serving.cli import serve_command
    from serving.client import ServingClient

    servers, clients = [], {}
    try:
        for rate in RATES:
            port = portpicker.pick_unused_port()
            extra = []
            if rate:
                prefix = os.path.join(workdir, f"overhead-{rate}", "requests")
                extra = ["--request-log-prefix", prefix, "--request-log-sampling-rate", str(rate)]
            command = serve_command(name, base_path, port, embedded=True, extra=extra)
            servers.append(subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL))
            clients[rate] = ServingClient(f"127.0.0.1:{port}")
            clients[rate].wait_until_available(name, timeout_s=120)
        for client in clients.values():
            for row in rows[:20]:
                client.predict_rows(name, [row])  # warm: the signature is read once
        return [_p50s(clients, name, rows, args.requests) for _ in range(args.rounds)]
    finally:
        for client in clients.values():
            client.close()
        for server in servers:
            server.terminate()
            server.wait()


def _p50s(clients, name, rows, requests: int) -> dict[float, float]:
    """p50 (ms) per sampling rate; the servers take turns request by request, so a load
    change on the (shared) machine falls on all three alike."""
    latencies: dict[float, list[float]] = {rate: [] for rate in clients}
    for index in range(requests):
        row = [rows[index % len(rows)]]
        for rate, client in clients.items():
            start = time.perf_counter()
            client.predict_rows(name, row)
            latencies[rate].append(time.perf_counter() - start)
    return {rate: statistics.median(values) * 1000 for rate, values in latencies.items()}


def _report_overhead(rounds: list[dict[float, float]]) -> None:
    print(
        "serving p50 (ms), one-row gRPC Predict at concurrency 1, request logging off / 0.1 / 1.0"
    )
    for number, measured in enumerate(rounds, start=1):
        cells = "  ".join(f"{measured[r]:.3f}" for r in RATES)
        over = "  ".join(f"{measured[r] / measured[0.0] - 1:+.1%}" for r in RATES[1:])
        print(f"  round {number}: {cells}   overhead {over}")
    for rate in RATES[1:]:
        overhead = statistics.median(m[rate] / m[0.0] - 1 for m in rounds)
        goal = (
            f" (goal <= {OVERHEAD_GOAL:.0%}: {'met' if overhead <= OVERHEAD_GOAL else 'NOT met'})"
        )
        print(
            f"median overhead at sampling {rate}: {overhead:+.1%}" + (goal if rate == 0.1 else "")
        )


def _write_logs(name, base_path, rows, logs: Path, records: int) -> float:
    """`records` PredictionLogs of one-row Predict requests with the served model's answers:
    the rows are predicted once through a server, then each record is one of them."""
    import portpicker

    from serving.client import ServingClient
    from serving.config import ModelConfig, RequestLogConfig
    from serving.logging_requests import RequestLogger
    from serving.server import ModelServer, ServerOptions

    options = ServerOptions(grpc_port=portpicker.pick_unused_port(), rest_port=0)
    capture = RequestLogConfig(str(logs / "capture" / "requests"))
    server = ModelServer([ModelConfig(name, base_path, request_log=capture)], options).start()
    try:
        with ServingClient(f"127.0.0.1:{server.grpc_port}") as client:
            client.wait_until_available(name, timeout_s=120)
            for row in rows:
                client.predict_rows(name, [row])
    finally:
        server.stop()
    pairs = _captured_pairs(logs / "capture")
    start = time.perf_counter()
    writer = RequestLogger(RequestLogConfig(str(logs / "requests"), max_queued=records)).start()
    draw = random.Random(0)
    for _ in range(records):
        writer.log("Predict", *draw.choice(pairs))
    counts = writer.stop()
    assert counts.written == records, counts
    for path in (logs / "capture").iterdir():
        path.unlink()
    (logs / "capture").rmdir()
    return time.perf_counter() - start


def _captured_pairs(folder: Path) -> list:
    from serving.logging_requests import log_files, read_prediction_logs

    pairs = []
    for path in log_files(str(folder)):
        for record in read_prediction_logs(path):
            pairs.append((record.predict_log.request, record.predict_log.response))
    return pairs


# Runs the monitor CLI in a fresh process and prints that process's own peak RSS (KiB).
_MEASURED_MONITOR = (
    "import resource, sys\n"
    "from pipeline import cli\n"
    "code = cli.main(sys.argv[1:])\n"
    "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def _monitor(args, logs: Path) -> None:
    command = [sys.executable, "-c", _MEASURED_MONITOR, "monitor", "--config", args.config]
    if args.output_root:
        command += ["--output-root", args.output_root]
    command += ["--logs", str(logs)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = result.stdout.strip().splitlines()
    peak = [line.split()[1] for line in lines if line.startswith("maxrss_kib")]
    if not peak:
        print(result.stderr[-3000:])
        raise SystemExit(f"monitor failed with exit {result.returncode}")
    print("\n".join(line for line in lines if not line.startswith("maxrss_kib")))
    print(
        f"monitor on {args.records} logged requests: {seconds:.1f}s (process start and imports "
        f"included), peak memory {int(peak[0]) / 1024:.0f} MB, exit {result.returncode}"
    )


def _derived(count: int) -> int:
    import resource

    import numpy as np
    import tensorflow as tf
    import tensorflow_data_validation as tfdv

    from pipeline import monitor_derived, series, texts
    from pipeline.images import fashion_mnist_arrays

    pixels, _ = fashion_mnist_arrays("eval")
    images = [tf.io.encode_png(p).numpy() for p in pixels[np.arange(count) % len(pixels)]]
    corpus = sorted(texts.bbc_news_root().glob("*/*.txt"))
    articles = [
        corpus[i % len(corpus)].read_bytes().decode("utf-8", "replace") for i in range(count)
    ]
    vocabulary = _vocabulary(articles[: len(corpus)], 20_000)
    lines = series.files_of("ucr:FordA")[1].read_text().splitlines()
    signals = [[float(v) for v in lines[i % len(lines)].split("\t")[1:]] for i in range(count)]
    print(f"derived statistics of {count:,} values per feature type (2 shared cores):")
    for kind, values in (("image", images), ("text", articles), ("sequence", signals)):
        start = time.perf_counter()
        frame = monitor_derived.derived_frame({kind: values}, {kind: kind}, {kind: vocabulary})
        derived = time.perf_counter() - start
        start = time.perf_counter()
        tfdv.generate_statistics_from_dataframe(frame)
        stats = time.perf_counter() - start
        print(
            f"  {kind:<8} derived {derived:6.1f}s ({count / derived:8,.0f}/s), "
            f"TFDV statistics {stats:5.1f}s"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak memory {peak:,.0f} MB")
    return 0


def _vocabulary(articles: list[str], size: int) -> list[bytes]:
    """Transform's vocabulary of these texts: the `size` most frequent tokens."""
    import collections

    import tensorflow as tf

    from models.preprocessing import tokenize

    counts: collections.Counter = collections.Counter()
    for start in range(0, len(articles), 256):
        for tokens in tokenize(tf.constant(articles[start : start + 256])).to_list():
            counts.update(tokens)
    return [token for token, _ in counts.most_common(size)]


def _retraining(args) -> int:
    """Trains on 2007, then retrains on 2007-2009 warm-started and from scratch."""
    import yaml

    from pipeline.data import read_source

    rows = list(csv.DictReader(io.StringIO(read_source("palmerpenguins"))))
    with tempfile.TemporaryDirectory(prefix="bench-retraining-") as workdir:
        work = Path(workdir)
        raw = yaml.safe_load(Path(args.config).read_text())
        if raw.get("schema_file"):
            raw["schema_file"] = str((Path(args.config).parent / raw["schema_file"]).resolve())
        raw["data"]["source"] = str(work / "penguins.csv")
        if args.max_trials:
            raw["tuner"]["max_trials"] = args.max_trials
        if args.epochs:
            raw["training"]["epochs"] = args.epochs
        _write_rows(work / "penguins.csv", [r for r in rows if r["year"] == "2007"])
        base = _pipeline_run(raw, work, "base")
        print(f"2007 model: {base['training']['epochs']} epochs, {base['seconds']:.0f}s run")
        _write_rows(work / "penguins.csv", rows)
        print(f"{'retrain on 2007-2009':22} {'epochs':>6} {'fit s':>7} {'new-year accuracy':>18}")
        for warm in (True, False):
            raw["training"]["warm_start"] = warm
            summary = _pipeline_run(raw, work, "warm" if warm else "scratch")
            training = summary["training"]
            accuracy = _new_year_accuracy(work / "out", {"2008", "2009"})
            name = "warm-started" if warm else "from scratch"
            print(
                f"{name:22} {training['epochs']:>6} {training['seconds']:>7.1f} {accuracy:>18.3f}"
                f"  (from {summary['warm_start']['from'] or 'nothing'})"
            )
    return 0


def _write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _pipeline_run(raw: dict, work: Path, name: str) -> dict:
    import yaml

    from pipeline import local_runner
    from pipeline.config import load_config

    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    summary = local_runner.run(load_config(path, output_root=str(work / "out")))
    if summary["status"] != "succeeded":
        raise SystemExit(f"the {name} run failed: {summary['error']}")
    return summary


def _new_year_accuracy(root: Path, years: set[str]) -> float:
    """Accuracy of the newest Trainer model on the eval split's birds of `years`."""
    import numpy as np
    import tensorflow as tf

    pipeline = root / "pipelines" / "penguins"
    model_dir = max((pipeline / "Trainer" / "model").iterdir(), key=lambda p: int(p.name))
    examples_dir = max(
        (pipeline / "CsvExampleGen" / "examples").iterdir(), key=lambda p: int(p.name)
    )
    files = [str(p) for p in (examples_dir / "Split-eval").glob("*.gz")]
    examples, truth = [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        features = example.features.feature
        if str(features["year"].int64_list.value[0]) in years:
            examples.append(record.numpy())
            truth.append(features["species"].bytes_list.value[0].decode())
    model = tf.saved_model.load(str(model_dir / "Format-Serving"))
    out = model.signatures["serving_default"](examples=tf.constant(examples))
    best = np.argmax(out["scores"].numpy(), axis=1)
    predicted = [row[i].decode() for row, i in zip(out["classes"].numpy(), best, strict=True)]
    return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))


if __name__ == "__main__":
    sys.exit(main())
