"""Command line: serve models, send predictions, render Kubernetes manifests.

    python -m serving serve --model-name penguins --model-base-path output/serving/penguins
    python -m serving predict --model-name penguins --input rows.csv
    python -m serving manifests --model-name penguins --model-path gs://b/serving/penguins \\
        --accelerator gpu --out k8s/
    python -m serving explain --model-dir output/serving/penguins --input rows.csv

`serve` execs tensorflow_model_server with the same flags when it is on PATH (unless
--embedded), otherwise runs the embedded server in the foreground until interrupted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving import config

REAL_SERVER = "tensorflow_model_server"
# What `predict --image-feature` reads from a folder, in any case; other files are skipped.
# The same as pipeline.images.IMAGE_EXTENSIONS (a test holds them equal): serving/ runs
# without the pipeline package.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Images per Predict call: a few MB of PNGs/JPEGs, far below gRPC's message limit.
IMAGE_BATCH = 64
_log = logging.getLogger("serving")


def serve_command(
    model_name: str,
    model_base_path: str,
    grpc_port: int,
    *,
    rest_port: int = 0,
    embedded: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv that starts `python -m serving serve` for one model in a child process.

    Args:
      model_name: the name clients use.
      model_base_path: directory holding the model's <version>/ SavedModels.
      grpc_port: gRPC port on 127.0.0.1.
      rest_port: REST port; 0 turns REST off.
      embedded: never exec tensorflow_model_server, even when it is on PATH.
      extra: further `serve` options, e.g. batching flags.
    """
    command = [sys.executable, "-m", "serving", "serve"]
    if embedded:
        command.append("--embedded")
    command += ["--model-name", model_name, "--model-base-path", model_base_path]
    command += ["--grpc-port", str(grpc_port), "--rest-port", str(rest_port), *extra]
    return command


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return args.handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, dest="command")

    serve = commands.add_parser("serve", help="serve models over gRPC and REST")
    serve.add_argument("--model-name", help="name clients use (with --model-base-path)")
    serve.add_argument("--model-base-path", help="directory holding <version>/ SavedModels")
    serve.add_argument("--models-config", help="TF Serving models.config (instead of name/path)")
    serve.add_argument("--grpc-port", type=int, default=8500)
    serve.add_argument("--rest-port", type=int, default=8501, help="0 turns REST off")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument("--enable-batching", action="store_true")
    serve.add_argument("--batching-parameters", help="TF Serving batching_parameters.txt")
    serve.add_argument("--poll-seconds", type=float, default=1.0, help="base path poll interval")
    serve.add_argument(
        "--max-request-elements",
        type=_positive_count,
        default=config.RequestLimits.max_elements,
        help="most tensor elements (REST: JSON values; Classify/Regress: examples) one request "
        "may expand to (default: %(default)s; embedded server only)",
    )
    serve.add_argument("--embedded", action="store_true", help=f"never exec {REAL_SERVER}")
    _request_log_flags(serve)
    for pool in ("intra", "inter"):
        serve.add_argument(
            f"--tensorflow-{pool}-op-parallelism",
            type=_thread_count,
            help=f"TensorFlow {pool}-op threads (default and 0: TensorFlow's choice)",
        )
    serve.set_defaults(handler=_serve)

    predict = commands.add_parser(
        "predict", help="send rows from a CSV or JSON file, or image files"
    )
    predict.add_argument("--model-name", required=True)
    predict.add_argument(
        "--input",
        required=True,
        help="CSV with a header, a JSON list of objects, or (with --image-feature) an image "
        "file or a folder of them",
    )
    predict.add_argument(
        "--image-feature",
        metavar="NAME",
        help="the model's image feature: each image file becomes one row {NAME: its bytes}",
    )
    predict.add_argument(
        "--text-feature",
        metavar="NAME",
        help="the model's text feature: INPUT is a .txt file or a folder of them, each file"
        " one text (UTF-8), sent to serving_raw",
    )
    predict.add_argument(
        "--sequence-feature",
        metavar="NAME",
        help="the model's series feature: INPUT is a .tsv/.csv of series, one per line (the"
        " values, or the UCR layout: label first, then the values), sent to serving_raw",
    )
    predict.add_argument(
        "--sequence-length", type=int, help="values per series (with --sequence-feature)"
    )
    predict.add_argument("--address", default="127.0.0.1:8500")
    predict.add_argument(
        "--signature",
        help="a signature taking raw features (default: serving_raw for rows, "
        "serving_default, which takes tf.Examples, for images)",
    )
    predict.add_argument("--timeout-s", type=float, default=10.0)
    predict.set_defaults(handler=_predict)

    explain = commands.add_parser(
        "explain", help="integrated gradients of raw examples against a pushed model directory"
    )
    explain.add_argument(
        "--model-dir",
        required=True,
        help="a pushed model: the serving directory (newest version), a version directory, or "
        "an explainer bundle (the Explanations artifact's explainer/)",
    )
    explain.add_argument(
        "--input",
        required=True,
        help="CSV with a header or a JSON list of objects (one row each), or with "
        "--image-feature an image file, with --text-feature a .txt file",
    )
    explain.add_argument("--image-feature", metavar="NAME", help="INPUT is an image for NAME")
    explain.add_argument("--text-feature", metavar="NAME", help="INPUT is a text for NAME")
    explain.add_argument("--row", type=int, help="explain only this row of a CSV/JSON (from 0)")
    explain.add_argument(
        "--steps", type=_positive_count, help="integration steps (default: the pipeline's)"
    )
    explain.set_defaults(handler=_explain)

    manifests = commands.add_parser("manifests", help="write Kubernetes manifests for TF Serving")
    manifests.add_argument("--model-name", required=True)
    manifests.add_argument(
        "--model-path", required=True, help="gs://bucket/dir or pvc:CLAIM[/subdir]"
    )
    manifests.add_argument("--accelerator", choices=["cpu", "gpu", "tpu"], default="cpu")
    manifests.add_argument("--out", required=True, help="directory for the YAML files")
    manifests.add_argument("--namespace", default="default")
    manifests.add_argument("--replicas", type=int, default=2, help="minimum replicas of the HPA")
    manifests.add_argument("--max-replicas", type=int, default=8)
    manifests.set_defaults(handler=_manifests)
    return parser


def _positive_count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a count >= 1, got {count}")
    return count


def _thread_count(text: str) -> int:
    count = int(text)
    if count < 0:
        raise argparse.ArgumentTypeError(
            f"expected a thread count >= 0 (0: TF's choice), got {count}"
        )
    return count


def _request_log_flags(serve: argparse.ArgumentParser) -> None:
    """Request logging (the embedded server): TF Serving's logging_config as flags."""
    defaults = config.RequestLogConfig("")
    serve.add_argument(
        "--request-log-prefix",
        metavar="PREFIX",
        help="log sampled requests of --model-name as PredictionLog TFRecord files "
        "PREFIX-*.tfrecord (with --models-config: its logging_config)",
    )
    serve.add_argument(
        "--request-log-sampling-rate",
        type=float,
        default=defaults.sampling_rate,
        help="share of requests logged, in (0, 1] (default: %(default)s)",
    )
    serve.add_argument(
        "--request-log-max-bytes",
        type=_positive_count,
        default=defaults.max_file_bytes,
        help="a log file is closed and the next opened past this size (default: %(default)s)",
    )


def _request_log(args: argparse.Namespace, models_config: bool) -> config.RequestLogConfig | None:
    """The --model-name model's request log config from the flags (None: not logged).

    Raises:
      config.ServingConfigError: a flag's value is invalid, or --request-log-prefix was given
        with --models-config (whose logging_config says it).
    """
    if not args.request_log_prefix:
        return None
    if models_config:
        raise config.ServingConfigError(
            "--request-log-prefix",
            "logging_config",
            "with --models-config, set each model's logging_config in that file",
        )
    return config.request_log_config(
        args.request_log_prefix,
        args.request_log_sampling_rate,
        "flags",
        "--request-log",
        args.request_log_max_bytes,
    )


def _with_request_log_size(models, max_file_bytes: int) -> tuple[config.ModelConfig, ...]:
    """`models` with --request-log-max-bytes applied to the ones whose requests are logged."""
    return tuple(
        dataclasses.replace(
            m, request_log=dataclasses.replace(m.request_log, max_file_bytes=max_file_bytes)
        )
        if m.request_log
        else m
        for m in models
    )


def real_server_command(args: argparse.Namespace, binary: str) -> list[str]:
    """Returns the tensorflow_model_server command line equivalent to `serve`'s arguments."""
    command = [binary, f"--port={args.grpc_port}", f"--rest_api_port={args.rest_port}"]
    command.append(f"--file_system_poll_wait_seconds={max(1, round(args.poll_seconds))}")
    if args.models_config:
        command.append(f"--model_config_file={os.path.abspath(args.models_config)}")
    else:
        command += [
            f"--model_name={args.model_name}",
            f"--model_base_path={_absolute(args.model_base_path)}",
        ]
    if args.enable_batching:
        command.append("--enable_batching=true")
        if args.batching_parameters:
            command.append(
                f"--batching_parameters_file={os.path.abspath(args.batching_parameters)}"
            )
    if args.rest_port:
        command.append(f"--rest_api_hostname={args.host}")
    for pool in ("intra", "inter"):
        threads = getattr(args, f"tensorflow_{pool}_op_parallelism")
        if threads is not None:
            command.append(f"--tensorflow_{pool}_op_parallelism={threads}")
    return command


def _serve(args: argparse.Namespace) -> int:
    if bool(args.models_config) == bool(args.model_name and args.model_base_path):
        raise SystemExit(
            "serve: give either --models-config, or --model-name and --model-base-path"
        )
    if args.batching_parameters and not args.enable_batching:
        raise SystemExit("serve: --batching-parameters needs --enable-batching")
    binary = shutil.which(REAL_SERVER)
    if binary and not args.embedded:
        command = real_server_command(args, binary)
        if args.max_request_elements != config.RequestLimits.max_elements:
            _log.warning("%s has no --max-request-elements; it is not applied", REAL_SERVER)
        if args.request_log_prefix:
            _log.warning(
                "%s has no --request-log-prefix: requests are not logged (--embedded logs them)",
                REAL_SERVER,
            )
        _log.info("exec %s (its gRPC port listens on all interfaces)", " ".join(command))
        os.execv(binary, command)

    from serving.server import ModelServer, ServerOptions

    try:
        request_log = _request_log(args, bool(args.models_config))
        models = (
            config.load_models_config(args.models_config)
            if args.models_config
            else (
                config.ModelConfig(
                    args.model_name, _absolute(args.model_base_path), request_log=request_log
                ),
            )
        )
        models = _with_request_log_size(models, args.request_log_max_bytes)
        batching = None
        if args.enable_batching:
            batching = (
                config.load_batching_parameters(args.batching_parameters)
                if args.batching_parameters
                else config.BatchingConfig()
            )
    except (OSError, config.ServingConfigError) as err:
        raise SystemExit(f"serve: {err}") from err
    options = ServerOptions(
        host=args.host,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        poll_interval_s=args.poll_seconds,
        limits=config.RequestLimits(max_elements=args.max_request_elements),
    )
    _set_tensorflow_threads(args)
    server = ModelServer(models, options, batching).start()
    _wait_for_signal()
    _log.info("shutting down")
    server.stop()
    return 0


def _set_tensorflow_threads(args: argparse.Namespace) -> None:
    """Sizes TF's thread pools as asked; must run before TensorFlow runs any op.

    Not set by default: on 2 cores, 1 and 1 took 15-25% less server CPU per request, but
    made the penguins model's own call 20-40% slower and gave no req/s gain end to end.
    """
    import tensorflow as tf

    intra, inter = args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism
    if intra is not None:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter is not None:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    _log.info(
        "TensorFlow threads: intra-op %d, inter-op %d (0: TF's choice)",
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def read_rows(path: str) -> list[dict[str, Any]]:
    """Reads rows from a CSV with a header, or a JSON list of objects (or {"instances": [...]}).

    Raises:
      ValueError: the file holds no rows, is neither format, or has a CSV line whose number of
        fields differs from the header's; the message names the file (and the line).
    """
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text: {err}") from err
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON: {err}") from err
        rows = data.get("instances") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f'{path}: expected a JSON list of objects or {{"instances": [...]}}')
    else:
        rows = _csv_rows(path, text)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _csv_rows(path: str, text: str) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    rows = []
    for fields in reader:
        if not fields:
            continue
        if len(fields) != len(header):
            raise ValueError(
                f"{path}:{reader.line_num}: {len(fields)} fields, but the header has "
                f"{len(header)}: {','.join(header)}"
            )
        rows.append(dict(zip(header, fields, strict=True)))
    return rows


def format_predictions(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Returns one JSON-ready dict per row: the top class and class scores, or the output values."""
    results = []
    if "scores" in outputs and "classes" in outputs:
        for classes, scores in zip(outputs["classes"], outputs["scores"], strict=True):
            names = [c.decode() if isinstance(c, bytes) else str(c) for c in classes]
            best = max(range(len(names)), key=lambda i: scores[i])
            results.append(
                {
                    "class": names[best],
                    "scores": {n: round(float(s), 6) for n, s in zip(names, scores, strict=True)},
                }
            )
        return results
    count = len(next(iter(outputs.values())))
    for index in range(count):
        results.append({k: v[index].tolist() for k, v in outputs.items()})
    return results


def image_files(path: str) -> list[Path]:
    """Returns `path` if it is an image file, else the image files under it, recursively, sorted.

    Image files are those named .png, .jpg or .jpeg (in any case); others are skipped.

    Raises:
      ValueError: `path` is a folder with no image file in it or its sub-folders.
    """
    if not Path(path).is_dir():
        return [Path(path)]
    found = sorted(
        p for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()
    )
    if not found:
        raise ValueError(
            f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it or its sub-folders"
        )
    return found


def _is_image_input(path: str) -> bool:
    return Path(path).is_dir() or Path(path).suffix.lower() in IMAGE_SUFFIXES


def _read_images(paths: Sequence[Path], feature: str) -> list[dict[str, bytes]]:
    """One row {feature: the file's bytes, unchanged} per file."""
    rows = []
    for path in paths:
        try:
            rows.append({feature: path.read_bytes()})
        except OSError as err:
            raise OSError(f"{path}: cannot read it: {err.strerror or err}") from err
    return rows


def text_files(path: str) -> list[Path]:
    """`path` if it is a file, else the .txt files under it, recursively, sorted.

    Raises:
      ValueError: a folder without .txt files.
    """
    if not Path(path).is_dir():
        return [Path(path)]
    found = sorted(p for p in Path(path).rglob("*.txt") if p.is_file())
    if not found:
        raise ValueError(f"{path}: no .txt files in it or its sub-folders")
    return found


def read_series(path: str, length: int) -> tuple[list[str], list[list[float]]]:
    """The series of a .tsv (tab) or .csv (comma) file: each line `length` values, or a
    label and `length` values (the UCR layout; the label is returned, not sent).

    Returns:
      (labels, "" where a line has none; the series).

    Raises:
      ValueError: a line with another number of fields, a value that is not a number,
        or NaN or infinite; the message names the file and line.
    """
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    labels, rows = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(delimiter)
        if len(fields) not in (length, length + 1):
            raise ValueError(
                f"{path}:{number}: {len(fields)} fields; a series has {length} values"
                " (optionally after its label)"
            )
        labels.append(fields[0].strip() if len(fields) > length else "")
        try:
            values = [float(v) for v in fields[-length:]]
        except ValueError:
            raise ValueError(f"{path}:{number}: a value is not a number") from None
        # The model was trained on finite series (staging refuses others); a NaN would
        # only come back as NaN scores.
        if not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"{path}:{number}: a value is NaN or infinite; a series needs {length} "
                "finite values (fill or drop the gaps first)"
            )
        rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no series")
    return labels, rows


def _predict_raw(args: argparse.Namespace) -> int:
    """Texts or series through serving_raw, one JSON line per file or series."""
    import grpc
    import numpy as np

    from serving import client as serving_client

    try:
        if args.text_feature:
            paths = text_files(args.input)
            names = [str(p) for p in paths]
            inputs = {args.text_feature: np.array([p.read_bytes() for p in paths], dtype=object)}
        else:
            if not args.sequence_length:
                raise ValueError("--sequence-length is required with --sequence-feature")
            labels, rows = read_series(args.input, args.sequence_length)
            names = [f"{args.input}:{i + 1}" for i in range(len(rows))]
            inputs = {args.sequence_feature: np.array(rows, np.float32)}
    except (OSError, ValueError) as err:
        raise SystemExit(f"predict: {err}") from err
    signature = args.signature or serving_client.RAW_SIGNATURE
    try:
        with serving_client.ServingClient(args.address, timeout_s=args.timeout_s) as client:
            outputs = client.predict(args.model_name, inputs, signature_name=signature)
    except grpc.RpcError as err:
        raise SystemExit(f"predict: {_rpc_failure(err, args)}") from err
    for index, result in enumerate(format_predictions(outputs)):
        extra = {"label": labels[index]} if args.sequence_feature and labels[index] else {}
        print(json.dumps({"input": names[index], **extra, **result}))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import grpc

    from serving import client as serving_client

    if args.text_feature or args.sequence_feature:
        return _predict_raw(args)

    images = _is_image_input(args.input)
    if images and not args.image_feature:
        kind = "a folder" if Path(args.input).is_dir() else "an image"
        raise SystemExit(
            f"predict: {args.input} is {kind}, but no --image-feature was given: the config "
            "has no (single) image feature, so the model takes other inputs; give a CSV or "
            "JSON file of rows"
        )
    try:
        paths = image_files(args.input) if images else []
        rows = _read_images(paths, args.image_feature) if images else read_rows(args.input)
    except (OSError, ValueError) as err:
        raise SystemExit(f"predict: {err}") from err
    try:
        with serving_client.ServingClient(args.address, timeout_s=args.timeout_s) as client:
            if images:
                signature = args.signature or serving_client.DEFAULT_SIGNATURE
                outputs = _predict_in_batches(client, args.model_name, rows, signature)
            else:
                signature = args.signature or serving_client.RAW_SIGNATURE
                outputs = client.predict_rows(args.model_name, rows, signature_name=signature)
    except ValueError as err:
        raise SystemExit(f"predict: {args.input}: {err}") from err
    except grpc.RpcError as err:
        raise SystemExit(f"predict: {_rpc_failure(err, args)}") from err
    for index, result in enumerate(format_predictions(outputs)):
        if images:
            print(json.dumps(_image_result(paths[index], result)))
        else:
            print(json.dumps({"row": index, **result}))
    return 0


def _image_result(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """The file, then (for a classifier) its top class, that class's score and all scores."""
    if "class" not in result:
        return {"file": str(path), **result}
    top = result["class"]
    return {"file": str(path), "class": top, "score": result["scores"][top], **result}


def _predict_in_batches(client, model_name: str, rows: list, signature: str) -> dict[str, Any]:
    """Predicts IMAGE_BATCH rows per call (one call's message stays small); joins the outputs."""
    import numpy as np

    parts = [
        client.predict_examples(model_name, rows[i : i + IMAGE_BATCH], signature_name=signature)
        for i in range(0, len(rows), IMAGE_BATCH)
    ]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _rpc_failure(err, args: argparse.Namespace) -> str:
    """One line on why a call to the server failed, and what to do when none is running."""
    import grpc

    details = " ".join((err.details() or "").split())
    if err.code() == grpc.StatusCode.UNAVAILABLE:
        return (
            f"no model server answered at {args.address} ({details}); "
            "`make serve` starts one, or pass --address"
        )
    if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the server at {args.address} did not answer within {args.timeout_s}s"
    return f"the server at {args.address} refused the request: {err.code().name}: {details}"


def _explain_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.image_feature:
        return _read_images(image_files(args.input)[:1], args.image_feature)
    if args.text_feature:
        return [{args.text_feature: Path(args.input).read_text(encoding="utf-8")}]
    rows = read_rows(args.input)
    if args.row is None:
        return rows
    if not 0 <= args.row < len(rows):
        raise ValueError(f"{args.input}: --row {args.row}, but it has {len(rows)} rows")
    return [rows[args.row]]


def _explain(args: argparse.Namespace) -> int:
    """One JSON line per row: the explained class or output and each feature's attribution."""
    from serving import client as serving_client

    # Loading the explainer imports TFX and Beam, whose INFO lines would bury the answer.
    logging.getLogger().setLevel(logging.WARNING)
    try:
        rows = _explain_rows(args)
        results = serving_client.explain_rows(args.model_dir, rows, steps=args.steps)
    except (OSError, ValueError) as err:
        raise SystemExit(f"explain: {err}") from err
    for result in results:
        print(json.dumps(result))
    return 0


def _manifests(args: argparse.Namespace) -> int:
    from serving import manifests

    spec = manifests.ManifestSpec(
        model_name=args.model_name,
        model_path=args.model_path,
        accelerator=args.accelerator,
        namespace=args.namespace,
        min_replicas=args.replicas,
        max_replicas=args.max_replicas,
    )
    for path in manifests.write(spec, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
