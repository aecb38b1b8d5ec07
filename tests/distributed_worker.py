"""One training process for tests/test_distributed_training.py (run as a subprocess).

    python tests/distributed_worker.py ARGS.json RESULT.json

ARGS.json names the Transform outputs and the custom_config; TF_CONFIG (if set)
makes this process one worker of a MultiWorkerMirroredStrategy cluster. It builds
the Trainer's fn_args as TFX does, calls the real `run_fn`, then evaluates the
saved Keras model on the eval split.
"""

from __future__ import annotations

import json
import os
import sys

from tfx.components.trainer import fn_args_utils
from tfx.types import artifact_utils, standard_artifacts


def _fn_args(args: dict, out_dir: str):
    examples = standard_artifacts.Examples()
    examples.uri = args["examples"]
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    graph = standard_artifacts.TransformGraph()
    graph.uri = args["transform_graph"]
    exec_properties = {
        "train_args": json.dumps({"splits": ["train"]}),
        "eval_args": json.dumps({"splits": ["eval"]}),
        "custom_config": json.dumps(args["custom_config"]),
    }
    fn_args = fn_args_utils.get_common_fn_args(
        {"examples": [examples], "transform_graph": [graph]}, exec_properties
    )
    fn_args.serving_model_dir = os.path.join(out_dir, "model", "Format-Serving")
    fn_args.model_run_dir = os.path.join(out_dir, "logs")
    fn_args.hyperparameters = None
    fn_args.custom_config = args["custom_config"]
    return fn_args


def main(args_path: str, result_path: str) -> None:
    from pipeline import distribution, training

    with open(args_path) as f:
        args = json.load(f)
    out_dir = os.path.dirname(result_path)
    fn_args = _fn_args(args, out_dir)
    training.run_fn(fn_args)
    devices = distribution.current_devices()
    if not devices.is_chief:
        return
    import tf_keras as keras

    settings = training.TrainingSettings.from_custom_config(fn_args.custom_config)
    data = training.load_training_data(fn_args, settings)
    model = keras.models.load_model(
        os.path.join(out_dir, "model", training.KERAS_MODEL_DIR, "model.keras")
    )
    loss, accuracy = model.evaluate(data.eval, verbose=0)
    result = {
        "strategy": distribution.choose(devices),
        "workers": devices.workers,
        "accuracy": float(accuracy),
        "loss": float(loss),
        "serving_model": os.path.isfile(os.path.join(fn_args.serving_model_dir, "saved_model.pb")),
    }
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
