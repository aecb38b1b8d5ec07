"""InfraValidation executor: Do() unpacks artifacts; validate_candidate() does the work."""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components.infra_validation import spec
from serving.validation import ValidationResult, validate_model
from serving.warmup import write_warmup_requests

BLESSED_FILE = "INFRA_BLESSED"
NOT_BLESSED_FILE = "INFRA_NOT_BLESSED"


class Executor(base_executor.BaseExecutor):
    """Runs validate_candidate on the component's artifacts and marks the blessing."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        model = artifact_utils.get_single_instance(input_dict[spec.MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[spec.EXAMPLES_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[spec.BLESSING_KEY])
        result = validate_candidate(
            model_path=path_utils.serving_model_path(
                model.uri, path_utils.is_old_model_artifact(model)
            ),
            examples_dir=artifact_utils.get_split_uri([examples], exec_properties[spec.SPLIT_KEY]),
            blessing_dir=blessing.uri,
            model_name=exec_properties[spec.MODEL_NAME_KEY],
            num_warmup_requests=exec_properties[spec.NUM_WARMUP_REQUESTS_KEY],
            timeout_s=exec_properties[spec.TIMEOUT_KEY],
        )
        blessing.set_int_custom_property(spec.BLESSED_PROPERTY, int(result.passed))
        blessing.set_int_custom_property(spec.HAS_MODEL_PROPERTY, int(result.passed))


def validate_candidate(
    model_path: str,
    examples_dir: str,
    blessing_dir: str,
    model_name: str,
    num_warmup_requests: int,
    timeout_s: float,
) -> ValidationResult:
    """Copies the model into the blessing with warmup requests, validates the copy, records why.

    Args:
      model_path: the candidate SavedModel.
      examples_dir: a split directory of gzipped TFRecord tf.Examples (e.g. .../Split-eval).
      blessing_dir: the InfraBlessing's directory; receives stamped_model/ (kept only when it
        passes), validation.json and INFRA_BLESSED or INFRA_NOT_BLESSED.
      model_name: the name to serve the model under.
      num_warmup_requests: how many warmup requests to write.
      timeout_s: how long the model may take to become AVAILABLE.

    Returns:
      The validation result.

    Raises:
      ValueError: the split holds no examples.
    """
    stamped = path_utils.stamped_model_path(blessing_dir)
    io_utils.copy_dir(src=model_path, dst=stamped)
    write_warmup_requests(
        stamped,
        read_examples(examples_dir, num_warmup_requests),
        model_name,
        num_requests=num_warmup_requests,
    )
    result = validate_model(stamped, model_name, timeout_s=timeout_s)
    if not result.passed:
        io_utils.delete_dir(stamped)
    marker = BLESSED_FILE if result.passed else NOT_BLESSED_FILE
    io_utils.write_string_file(os.path.join(blessing_dir, marker), "")
    io_utils.write_string_file(
        os.path.join(blessing_dir, spec.RESULT_FILE), json.dumps(result.to_dict(), indent=2)
    )
    return result


def read_examples(examples_dir: str, limit: int) -> list[bytes]:
    """Returns up to `limit` serialized tf.Examples from the gzipped TFRecord files in `examples_dir`.

    Raises:
      ValueError: the directory holds no records.
    """
    files = sorted(tf.io.gfile.glob(os.path.join(examples_dir, "*")))
    records = []
    if files:
        dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
        records = [bytes(r) for r in dataset.as_numpy_iterator()]
    if not records:
        raise ValueError(f"no examples in {examples_dir}; warmup requests need at least one")
    return records
