"""Command line: `python -m pipeline.cli run|schema|monitor --config configs/penguins.yaml`."""

from __future__ import annotations

import argparse
import sys

from pipeline.config import PipelineConfig, load_config, request_log_dir
from pipeline.errors import ConfigError, DataError


def _run(args: argparse.Namespace) -> int:
    from pipeline import progress

    config = load_config(args.config, output_root=args.output_root)
    run_id = progress.new_run_id()
    # TensorFlow writes its C++ start-up lines to fd 2 while it is imported, so the
    # run's log file takes fd 2 before local_runner (and TensorFlow) is imported.
    with progress.native_stderr_to(progress.log_path(config, run_id)):
        from pipeline import local_runner

        try:
            summary = local_runner.run(config, run_id)
        except local_runner.RunInterrupted as stop:
            print(f"run {run_id} of {config.pipeline_name} {stop}", file=sys.stderr)
            return 128 + stop.signum
        if summary["status"] != "succeeded":
            print(
                f"run {run_id} of {config.pipeline_name} failed: {summary['error']}"
                f" (log: {summary['log_file']})",
                file=sys.stderr,
            )
            return 1
    return 0


def _schema(args: argparse.Namespace) -> int:
    from pipeline import progress

    # The schema is what this command writes: the config may name it before it exists.
    config = load_config(args.config, output_root=args.output_root, schema_file_exists=False)
    out = args.out or config.schema_file
    if out is None:
        print(
            f"schema: give --out, or set schema_file in {args.config} to write there",
            file=sys.stderr,
        )
        return 2
    log = progress.log_path(config, f"schema-{progress.new_run_id()}")
    with progress.native_stderr_to(log):
        from pipeline import schema

        path = schema.write_inferred_schema(config, out, log)
    hint = "" if out == config.schema_file else f" and set schema_file in {args.config}"
    print(f"wrote {path}; review it (types, domains, presence){hint}; TFX log: {log}")
    return 0


def _serving_args(args: argparse.Namespace, config: PipelineConfig) -> list[str]:
    """The serving CLI's arguments for this config's model."""
    from pathlib import Path

    if args.command == "serve":
        base = str(Path(config.serving_root) / config.model_name)
        serve = ["serve", "--model-name", config.model_name, "--model-base-path", base]
        rate = config.monitoring.request_log_sampling_rate
        if rate > 0:
            # The embedded server logs requests; the monitor reads them from there.
            prefix = str(request_log_dir(config) / "requests")
            serve += ["--embedded", "--request-log-prefix", prefix]
            serve += ["--request-log-sampling-rate", str(rate)]
        return [*serve, *args.extra]
    if args.command == "explain":
        return _explain_args(args, config)
    predict = ["predict", "--model-name", config.model_name, "--input", args.input]
    if len(config.image_features) == 1:
        # Image files (or a folder of them) as INPUT become rows of this feature.
        predict += ["--image-feature", config.image_features[0]]
    elif config.data.format == "text_folder":
        # A .txt file (or a folder of them) as INPUT: one text each.
        predict += ["--text-feature", config.text_features[0]]
    elif config.sequence_features:
        # A .tsv/.csv of series as INPUT: one per line.
        predict += ["--sequence-feature", config.sequence_features[0]]
        predict += ["--sequence-length", str(config.sequence_length)]
    return [*predict, *args.extra]


def _explain_args(args: argparse.Namespace, config: PipelineConfig) -> list[str]:
    """`serving explain` against this config's pushed model (its newest version)."""
    from pathlib import Path

    model_dir = str(Path(config.serving_root) / config.model_name)
    explain = ["explain", "--model-dir", model_dir, "--input", args.input]
    if len(config.image_features) == 1:
        explain += ["--image-feature", config.image_features[0]]
    elif config.data.format == "text_folder":
        explain += ["--text-feature", config.text_features[0]]
    return [*explain, *args.extra]


def _serving(args: argparse.Namespace) -> int:
    import contextlib

    from pipeline import progress

    config = load_config(args.config, output_root=args.output_root)
    argv = _serving_args(args, config)
    quiet = contextlib.nullcontext()
    if args.command in ("predict", "explain"):
        # A client's answer (or its one-line error) is all the terminal shows; TensorFlow's
        # C++ start-up lines go to a log. The server keeps its log on the terminal.
        quiet = progress.native_stderr_to(
            progress.log_path(config, f"{args.command}-{progress.new_run_id()}")
        )
    with quiet:
        from serving import cli as serving_cli

        return serving_cli.main(argv)


def _monitor(args: argparse.Namespace) -> int:
    from pipeline import progress

    if args.cluster and args.retrain:
        # --retrain runs the local pipeline; a cluster retrains by its scheduled pipeline.
        print("monitor: --retrain runs the local pipeline; not with --cluster", file=sys.stderr)
        return 2
    config = load_config(args.config, output_root=args.output_root)
    log = progress.log_path(config, f"monitor-{progress.new_run_id()}")
    with progress.native_stderr_to(log):
        from pipeline import monitor

        result = monitor.monitor(
            config, logs=args.logs, examples=args.examples, cluster=args.cluster
        )
    _print_drift(config, result)
    if args.retrain:
        return _retrain(config, result)
    return monitor.DRIFT_EXIT_CODE if result.drifted else 0


def _print_drift(config: PipelineConfig, result) -> None:
    drift = result.drift
    for name, entry in drift["features"].items():
        flag = "DRIFT" if entry["drifted"] else "ok"
        print(
            f"{flag:5} {name} ({entry['role']}): {entry['statistic']} {entry['value']:.4f}"
            f" (threshold {entry['threshold']})"
        )
    for name, reasons in drift["anomalies"].items():
        print(f"anomaly {name}: {'; '.join(reasons)}")
    verdict = f"drift in {', '.join(drift['drifted_features'])}" if result.drifted else "no drift"
    print(
        f"{verdict}: {drift['serving']['rows']} serving rows vs. the training data of "
        f"{config.model_name} version {drift['served_version']}; wrote {result.directory}"
    )


def _retrain(config: PipelineConfig, result) -> int:
    """Runs the pipeline if the monitor found drift or the data changed: 0 when nothing
    was needed or the run succeeded (pushed or not), 1 when it failed."""
    from pipeline import progress, retrain

    run_id = progress.new_run_id()
    with progress.native_stderr_to(progress.log_path(config, run_id)):
        fired = retrain.trigger(config, result)
        if not fired.fires:
            print(f"retrain: not needed ({fired.reason})")
            return 0
        print(f"retrain: {fired.reason}; running {config.pipeline_name}, run {run_id}")
        from pipeline import local_runner

        summary = local_runner.run(config, run_id, retrain.monitoring_section(result, fired))
    if summary["status"] != "succeeded":
        print(
            f"retrain failed, the served model is unchanged: {summary['error']}"
            f" (log: {summary['log_file']})",
            file=sys.stderr,
        )
        return 1
    pushed = summary["pushed"]
    print(
        f"retrain: pushed version {pushed['version']}"
        if pushed
        else "retrain: the new model was not better; the served model is unchanged"
    )
    return 0


def _monitor_command(sub) -> None:
    cmd = sub.add_parser(
        "monitor",
        help="compare logged requests (or data) with the served model's training data; "
        "exit 3 on drift",
    )
    cmd.add_argument("--config", default="configs/penguins.yaml", help="pipeline config YAML")
    cmd.add_argument("--output-root", default=None, help="overrides outputs.root of the config")
    source = cmd.add_mutually_exclusive_group()
    source.add_argument(
        "--logs",
        default=None,
        help="folder (or file prefix) of PredictionLog TFRecords (default: where `make serve` "
        "logs them, <outputs.root>/request_logs/<model_name>)",
    )
    source.add_argument(
        "--examples", default=None, help="a CSV or tf.Example TFRecord file, or a folder of them"
    )
    cmd.add_argument(
        "--cluster",
        action="store_true",
        help="follow the model the cluster pipeline pushed (kubeflow.serving_root) through "
        "the cluster's ML Metadata (kubeflow.metadata); logs default to kubeflow.request_logs",
    )
    cmd.add_argument(
        "--retrain",
        action="store_true",
        help="run the pipeline when drift is found or the data changed since the served "
        "model's training (exit 0, or 1 if that run fails)",
    )
    cmd.set_defaults(func=_monitor)
    job = sub.add_parser(
        "compile-monitor",
        help="write the monitor job (a one-step KFP pipeline running `monitor --cluster`)",
    )
    job.add_argument("--config", default="configs/penguins.yaml", help="pipeline config YAML")
    job.add_argument(
        "--out", default=None, help="output YAML (default output/kubeflow/monitor.yaml)"
    )
    job.add_argument("--image", default="", help="overrides kubeflow.image")
    job.add_argument("--logs", default="", help="overrides kubeflow.request_logs")
    job.add_argument(
        "--image-config",
        default="",
        help="the config's path inside the image (default: its path in this repository)",
    )
    job.set_defaults(func=_compile_monitor)


def _compile_monitor(args: argparse.Namespace) -> int:
    from kubeflow import monitor_job

    config = load_config(args.config)
    spec = monitor_job.compile_monitor(
        config, args.out, image=args.image, logs=args.logs, image_config=args.image_config
    )
    print(f"wrote {args.out or monitor_job.DEFAULT_OUTPUT} ({spec['pipelineInfo']['name']})")
    return 0


_TARGET_FLAGS = ("image", "pipeline_root", "data_root", "serving_root", "schema_uri")


def _compile(args: argparse.Namespace) -> int:
    from pipeline import kubeflow_runner

    config = load_config(args.config, output_root=args.output_root)
    overrides = {key: getattr(args, key) for key in _TARGET_FLAGS}
    path = kubeflow_runner.compile_from_flags(config, args.out, overrides)
    print(f"wrote {path}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    import json

    from kubeflow import submit

    config = load_config(args.config, output_root=args.output_root)
    spec = args.spec or config.cluster.kubeflow.output
    try:
        if args.target == "vertex":
            result = submit.submit_vertex(config, spec, dry_run=args.dry_run)
        else:
            result = submit.submit_kfp(config, spec, endpoint=args.endpoint, dry_run=args.dry_run)
    except submit.SubmitError as err:
        print(f"submit error: {err}", file=sys.stderr)
        return 2
    print(
        ("dry run, nothing sent: " if args.dry_run else "submitted: ")
        + json.dumps(result, indent=2)
    )
    return 0


def _cluster_commands(sub) -> None:
    compile_cmd = sub.add_parser(
        "compile", help="write the Kubeflow V2 / Vertex AI PipelineJob JSON"
    )
    compile_cmd.add_argument(
        "--out", default=None, help="output file (default: kubeflow.output of the config)"
    )
    for key in _TARGET_FLAGS:
        compile_cmd.add_argument(
            "--" + key.replace("_", "-"), default=None, help=f"overrides kubeflow.{key}"
        )
    compile_cmd.set_defaults(func=_compile)
    submit_cmd = sub.add_parser(
        "submit", help="submit the compiled pipeline to Vertex AI or Kubeflow"
    )
    submit_cmd.add_argument("target", choices=("vertex", "kubeflow"))
    submit_cmd.add_argument(
        "--spec", default=None, help="compiled JSON (default: kubeflow.output of the config)"
    )
    submit_cmd.add_argument(
        "--endpoint", default=None, help="Kubeflow Pipelines host (overrides kubeflow.endpoint)"
    )
    submit_cmd.add_argument(
        "--dry-run", action="store_true", help="validate and print the request; send nothing"
    )
    submit_cmd.set_defaults(func=_submit)
    for cmd in (compile_cmd, submit_cmd):
        cmd.add_argument("--config", default="configs/penguins.yaml", help="pipeline config YAML")
        cmd.add_argument("--output-root", default=None, help="overrides outputs.root of the config")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfx-pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("run", _run, "run the whole pipeline locally (Beam DirectRunner, SQLite ML Metadata)"),
        ("schema", _schema, "infer a schema from the config's data, to curate and commit"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", default="configs/penguins.yaml", help="pipeline config YAML")
        cmd.add_argument("--output-root", default=None, help="overrides outputs.root of the config")
        cmd.set_defaults(func=func)
        if name == "schema":
            cmd.add_argument(
                "--out", default=None, help="schema .pbtxt to write (default: schema_file)"
            )
    serve = sub.add_parser(
        "serve", help="serve the pushed model (tensorflow_model_server or the embedded server)"
    )
    predict = sub.add_parser(
        "predict", help="send rows from a CSV or JSON file to the served model"
    )
    predict.add_argument(
        "--input", required=True, help="CSV with a header, or a JSON list of objects"
    )
    explain = sub.add_parser(
        "explain",
        help="integrated gradients of raw rows (CSV/JSON, an image, a text) against the pushed model",
    )
    explain.add_argument(
        "--input",
        required=True,
        help="CSV with a header, a JSON list of objects, an image or a text",
    )
    for cmd in (serve, predict, explain):
        cmd.add_argument("--config", default="configs/penguins.yaml", help="pipeline config YAML")
        cmd.add_argument("--output-root", default=None, help="overrides outputs.root of the config")
        cmd.set_defaults(func=_serving)
    _cluster_commands(sub)
    _monitor_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    # serve, predict and explain pass the options they do not know on to `python -m serving`.
    args.extra = [a for a in extra if a != "--"]
    if args.extra and args.func is not _serving:
        p.error(f"unrecognized arguments: {' '.join(args.extra)}")
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except DataError as err:
        print(f"data error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
