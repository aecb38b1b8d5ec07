"""Load test of the embedded model server on loopback: batch-1 gRPC Predict latency and throughput.

    scripts/in-env python -m bench.serving [--config configs/penguins.yaml]   (make bench-serving)
    scripts/in-env python -m bench.serving [--model-base-path output/serving/penguins \
        --model-name penguins --examples-dir output/pipelines/penguins/CsvExampleGen/examples/1/Split-eval]

(Run it as a module: as a script, its own name would hide the `serving` package.)

Prints p50/p99 latency and requests/s at concurrency 1 and 32, with batching off and on, next
to the floor: the in-process serving_default call on the same input (also the way the server
calls it, see serving.servable's flat call), and an empty call on the same gRPC server stack (at
concurrency 32, the most req/s the stack answers at all). At concurrency 1 the client is a
blocking stub (the lowest latency a caller sees); at 32 it is one asyncio thread with 32 calls
in flight, which takes far less CPU from the server on a small machine than 32 client threads.

The servers stay up for the whole run, and every measurement is taken once per round
(--rounds), in turn: the goal ratios are computed within each round, so that both sides of a
ratio see the same machine, and printed per round with their median. --requests and --seconds
bound each measurement over all rounds. With --config it loads the model that config pushed
(after `make run`) and sends one of its eval examples; without a model it builds a small MLP
with the Trainer's serving contract.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
_EMPTY_METHOD = "/bench.Empty/Call"


def main() -> int:
    args = _parser().parse_args()
    if args.serve_empty:
        return _serve_empty(args.serve_empty)
    import tensorflow as tf

    tf.random.set_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as workdir:
        if args.config and not args.model_base_path:
            _use_pushed_model(args)
        base_path, name = args.model_base_path, args.model_name
        if not base_path:
            base_path, name = _synthetic_model(workdir), "bench"
        example = _real_example(args.examples_dir) if args.examples_dir else _example_for(base_path)
        batching_file = Path(workdir, "batching.txt")
        batching_file.write_text(
            "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }\n"
            "num_batch_threads { value: 2 }\n"
        )
        with contextlib.ExitStack() as stack:
            targets = _targets(stack, base_path, name, example, batching_file)
            rounds = _measure_rounds(targets, args)
    _report(rounds)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", help="a pipeline config: bench the model it pushed, on its eval examples"
    )
    parser.add_argument("--model-base-path", help="<serving_root>/<name> with version dirs")
    parser.add_argument("--model-name", default="penguins")
    parser.add_argument("--examples-dir", help="gzipped TFRecord tf.Examples (a Split-eval dir)")
    parser.add_argument(
        "--requests", type=int, default=2000, help="most requests per measurement, over all rounds"
    )
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="most seconds per measurement, over all rounds"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (each measures everything)")
    parser.add_argument("--serve-empty", type=int, help=argparse.SUPPRESS)
    return parser


def _use_pushed_model(args) -> None:
    """Points args at the config's pushed model and its latest eval split, when there is one."""
    from pipeline.config import load_config

    config = load_config(args.config)
    base_path = Path(config.serving_root, config.model_name)
    if not any(v.isdigit() for v in (os.listdir(base_path) if base_path.is_dir() else [])):
        print(f"no pushed model under {base_path} (run `make run`); using a synthetic model")
        return
    args.model_base_path, args.model_name = str(base_path), config.model_name
    examples = Path(config.output_root, "pipelines", config.pipeline_name, "CsvExampleGen")
    splits = sorted(
        examples.glob("examples/*/Split-eval"), key=lambda p: int(p.parent.name), reverse=True
    )
    if splits and not args.examples_dir:
        args.examples_dir = str(splits[0])
    print(f"model {args.model_name} from {base_path}; example from {args.examples_dir}")


def _synthetic_model(workdir: str) -> str:
    """Saves an 8-feature, 2x64 MLP classifier with serving_default/serving_raw as version 1."""
    import tensorflow as tf

    names = [f"f{i}" for i in range(8)]
    spec = {n: tf.io.FixedLenFeature([], tf.float32, default_value=0.0) for n in names}

    class Mlp(tf.Module):
        def __init__(self):
            super().__init__()
            init = tf.random.normal
            self.w1, self.w2 = tf.Variable(init([8, 64])), tf.Variable(init([64, 64]))
            self.w3 = tf.Variable(init([64, 3]))

        def _outputs(self, features):
            x = tf.stack([features[n] for n in names], axis=1)
            logits = tf.nn.relu(tf.nn.relu(x @ self.w1) @ self.w2) @ self.w3
            classes = tf.tile(tf.constant([["a", "b", "c"]]), [tf.shape(x)[0], 1])
            return {"scores": tf.nn.softmax(logits), "classes": classes}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, examples):
            return self._outputs(tf.io.parse_example(examples, spec))

    model = Mlp()
    base_path = os.path.join(workdir, "models", "bench")
    tf.saved_model.save(
        model, os.path.join(base_path, "1"), signatures={"serving_default": model.serve}
    )
    return base_path


def _example_for(base_path: str) -> bytes:
    """A tf.Example with every feature serving_raw declares (or f0..f7 for the synthetic model)."""
    import tensorflow as tf

    from serving.examples import make_example

    version = max(int(v) for v in os.listdir(base_path) if v.isdigit())
    loaded = tf.saved_model.load(os.path.join(base_path, str(version)))
    if "serving_raw" in loaded.signatures:
        _, specs = loaded.signatures["serving_raw"].structured_input_signature
        row = {k: ("x" if s.dtype == tf.string else 1.0) for k, s in specs.items()}
    else:
        row = {f"f{i}": 0.5 * i for i in range(8)}
    return make_example(row, float_features=row).SerializeToString()


def _real_example(examples_dir: str) -> bytes:
    from components.infra_validation.executor import read_examples

    return read_examples(examples_dir, 1)[0]


@dataclasses.dataclass
class _Target:
    """One thing to measure: a blocking call (concurrency 1) and/or an async one (32)."""

    label: str
    call: Callable[[], object] | None = None
    # Given a grpc.aio channel to `address`, returns the call to make 32 at a time.
    async_call: Callable[[Any], Callable[[], Awaitable]] | None = None
    address: str = ""


def _empty_call(channel) -> Callable:
    call = channel.unary_unary(_EMPTY_METHOD)
    return lambda: call(b"", timeout=10)


def _predict_call(channel, request) -> Callable:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return lambda: stub.Predict(request, timeout=10)


def _targets(stack, base_path, name, example, batching_file) -> list[_Target]:
    """Loads the model in-process and starts the three servers, kept up for every round."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from serving.servable import Servable

    version = max(int(v) for v in os.listdir(base_path) if v.isdigit())
    path = os.path.join(base_path, str(version))
    public = tf.saved_model.load(path).signatures["serving_default"]
    key = next(iter(public.structured_input_signature[1]))
    flat = Servable("bench", version, path).signature("")
    targets = [
        _Target("in-process serving_default", lambda: public(**{key: tf.constant([example])})),
        _Target("in-process, server's flat call", lambda: flat.call({key: tf.constant([example])})),
    ]
    empty = _start(stack, [sys.executable, "-m", "bench.serving", "--serve-empty"], None)
    channel = stack.enter_context(grpc.insecure_channel(empty))
    grpc.channel_ready_future(channel).result(timeout=30)
    targets.append(_Target("empty gRPC call", _empty_call(channel), _empty_call, empty))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example], dtype=tf.string))
    on = ["--enable-batching", "--batching-parameters", str(batching_file)]
    for label, extra in (("batching off", []), ("batching on", on)):
        address = _start(stack, None, (name, base_path, extra))
        channel = stack.enter_context(grpc.insecure_channel(address))
        targets.append(
            _Target(
                f"gRPC Predict, {label}",
                _predict_call(channel, request),
                functools.partial(_predict_call, request=request),
                address,
            )
        )
    return targets


def _start(stack, command, model) -> str:
    """Starts a server child process (the empty one, or the model server); returns its address."""
    import portpicker

    from serving.cli import serve_command
    from serving.client import ServingClient

    port = portpicker.pick_unused_port()
    if model is None:
        command = [*command, str(port)]
    else:
        name, base_path, extra = model
        command = serve_command(name, base_path, port, embedded=True, extra=extra)
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    stack.callback(process.wait)
    stack.callback(process.terminate)
    address = f"127.0.0.1:{port}"
    if model is not None:
        with ServingClient(address) as client:
            client.wait_until_available(model[0], timeout_s=60)
    return address


def _measure_rounds(targets: list[_Target], args) -> list[dict]:
    """Measures every target once per round, in turn, so each round sees the same machine.

    A shared machine's load drifts over a run; ratios taken within a round compare figures
    measured seconds apart, and the rounds show how far they move.
    """
    import grpc

    budget = argparse.Namespace(
        requests=max(100, args.requests // args.rounds), seconds=args.seconds / args.rounds
    )
    rounds = []
    for _ in range(args.rounds):
        stats = {(t.label, 1): _measure(t.call, budget) for t in targets if t.call}

        async def concurrent():
            results = {}
            for target in targets:
                if target.async_call:
                    async with grpc.aio.insecure_channel(target.address) as channel:
                        call = target.async_call(channel)
                        results[(target.label, 32)] = await _measure_async(call, 32, budget)
            return results

        stats.update(asyncio.run(concurrent()))
        rounds.append(stats)
    return rounds


def _measure(call: Callable[[], object], args) -> dict:
    """Latency of `call` back to back on this thread (concurrency 1)."""
    for _ in range(20):
        call()
    latencies: list[float] = []
    deadline = time.monotonic() + args.seconds
    started = time.perf_counter()
    while len(latencies) < args.requests and time.monotonic() < deadline:
        begun = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - begun)
    return _stats(latencies, time.perf_counter() - started)


async def _measure_async(call: Callable[[], Awaitable], concurrency: int, args) -> dict:
    """Latency and throughput with `concurrency` calls in flight from this one thread.

    One event loop keeps the client's CPU use low, so on a small machine the client does
    not take the cores the server needs (32 client threads would).
    """
    for _ in range(20):
        await call()
    latencies: list[float] = []
    deadline = time.monotonic() + args.seconds
    remaining = [args.requests]

    async def worker():
        while remaining[0] > 0 and time.monotonic() < deadline:
            remaining[0] -= 1
            begun = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - begun)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _stats(latencies, time.perf_counter() - started)


def _stats(latencies: list[float], wall_s: float) -> dict:
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "p50_ms": cuts[49] * 1e3,
        "p99_ms": cuts[98] * 1e3,
        "rps": len(latencies) / wall_s,
        "n": len(latencies),
        "wall_s": wall_s,
        "latencies": latencies,
    }


def _serve_empty(port: int) -> int:
    """Serves an empty method on the same sync gRPC stack as the model server, until killed."""
    import grpc

    from serving.server import ServerOptions

    handler = grpc.method_handlers_generic_handler(
        "bench.Empty", {"Call": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=ServerOptions.grpc_workers))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()
    return 0


def _pooled(rounds: list[dict], key) -> dict:
    latencies = [x for r in rounds for x in r[key]["latencies"]]
    return _stats(latencies, sum(r[key]["wall_s"] for r in rounds))


def _report(rounds: list[dict]) -> None:
    # On a shared machine other work moves every figure; the load says how much was running.
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"{len(rounds)} rounds, every measurement once per round; rows pool the rounds")
    print(f"{'measurement':34} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'n':>6}")
    for label, concurrency in rounds[0]:
        s = _pooled(rounds, (label, concurrency))
        print(
            f"{label:34} {concurrency:>4} {s['p50_ms']:8.3f} {s['p99_ms']:8.3f} {s['rps']:8.0f} {s['n']:>6}"
        )

    def p50(r, label):
        return r[(label, 1)]["p50_ms"]

    def per_round(ratio) -> str:
        values = [ratio(r) for r in rounds]
        return f"median {statistics.median(values):.2f}x (rounds: {', '.join(f'{v:.2f}' for v in values)})"

    off = "gRPC Predict, batching off"
    print(
        "p50 at concurrency 1 / (in-process + empty gRPC): "
        + per_round(
            lambda r: (
                p50(r, off) / (p50(r, "in-process serving_default") + p50(r, "empty gRPC call"))
            )
        )
        + " (goal <= 1.5x)"
    )
    # The server calls the model through the flat path, which skips ~0.15 ms of TensorFlow's
    # Python bookkeeping; against that faster floor the ratio is the server's own overhead.
    print(
        "  against the flat-call floor: "
        + per_round(
            lambda r: (
                p50(r, off) / (p50(r, "in-process, server's flat call") + p50(r, "empty gRPC call"))
            )
        )
    )
    print(
        "req/s at concurrency 32, batching on / off: "
        + per_round(lambda r: r[("gRPC Predict, batching on", 32)]["rps"] / r[(off, 32)]["rps"])
        + " (goal >= 2x)"
    )


if __name__ == "__main__":
    sys.exit(main())
