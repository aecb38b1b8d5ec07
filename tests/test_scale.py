"""Scale: high-cardinality categorical features are embedded (and stored int8), small ones
stay one-hot; TFT bounds a vocabulary with top_k."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
import tf_keras as keras
import yaml
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import int8_sequence, quantization
from models.encoders import embedding_size
from models.features import FeatureSpec, transformed_name
from models.mlp import build_model
from models.preprocessing import _categorical
from pipeline.config import load_config
from pipeline.local_runner import beam_args

SPEC = FeatureSpec(numeric=("year",), categorical=("name", "sex"), label="y", task="classification")
NAMES = 5000
HPARAMS = {
    "units": 16,
    "layers": 1,
    "dropout": 0.0,
    "l2": 1e-6,
    "learning_rate": 0.01,
    "optimizer": "adam",
    "categorical_embedding_min_vocabulary": 64,
    "categorical_embedding_dim": 0,
}


def _features(rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "year_xf": rng.normal(size=rows).astype(np.float32),
        "name_xf": rng.integers(0, NAMES, rows),
        "sex_xf": rng.integers(0, 3, rows),
    }


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    built = build_model(HPARAMS, SPEC, {"name": NAMES, "sex": 3}, 2)
    rng = np.random.default_rng(0)
    features = _features(512, rng)
    # A label only the names carry: the embedding has to learn it.
    labels = (features["name_xf"] % 2).astype(np.int64)
    built.fit(features, labels, epochs=2, batch_size=64, verbose=0)
    return built


def test_the_embedding_size_follows_the_rule_of_thumb():
    assert [embedding_size(v) for v in (4, 64, 1000, 35_000)] == [3, 16, 50, 50]


def test_large_vocabularies_are_embedded_and_small_ones_stay_one_hot(model):
    name = model.get_layer(f"{transformed_name('name')}_encoding")
    sex = model.get_layer(f"{transformed_name('sex')}_encoding")
    assert isinstance(name, keras.layers.Embedding)
    assert (name.input_dim, name.output_dim) == (NAMES, embedding_size(NAMES))
    assert isinstance(sex, keras.layers.CategoryEncoding)
    # The first Dense sees 1 + 50 + 3 inputs, not 1 + 5000 + 3.
    first = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    assert first.kernel.shape == (1 + 50 + 3, 16)
    fixed = build_model(
        {**HPARAMS, "categorical_embedding_dim": 8}, SPEC, {"name": NAMES, "sex": 3}, 2
    )
    assert fixed.get_layer("name_xf_encoding").output_dim == 8
    one_hot = build_model(
        {**HPARAMS, "categorical_embedding_min_vocabulary": 10_000},
        SPEC,
        {"name": NAMES, "sex": 3},
        2,
    )
    assert isinstance(one_hot.get_layer("name_xf_encoding"), keras.layers.CategoryEncoding)


def test_the_int8_model_stores_the_embedding_as_int8_rows(model):
    int8 = quantization.quantize_weights(model)
    assert any(isinstance(layer, int8_sequence.Int8Embedding) for layer in int8.layers)
    features = _features(256, np.random.default_rng(1))
    np.testing.assert_allclose(
        int8.predict(features, verbose=0), model.predict(features, verbose=0), atol=0.02
    )


def test_the_tflite_models_take_int32_ids_and_stay_the_size_of_their_tables(model):
    inputs = quantization.tflite_inputs(model)
    assert {i.name: i.dtype for i in inputs}["name_xf"] == tf.int32
    flat = quantization.to_tflite(model)
    # The name table is 5000 x 50 floats (1 MB); one-hot would make it 5000 x 5000.
    assert len(flat) < 1.3e6
    features = _features(64, np.random.default_rng(2))
    int8 = quantization.to_tflite(model, quantization.representative_dataset(features, inputs, 64))
    assert len(int8) < 0.4e6


def test_tft_keeps_the_top_k_values_and_the_rest_share_the_oov_id(tmp_path):
    rows = [{"c": v} for v in ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"]]
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec({"c": tf.io.FixedLenFeature([], tf.string)})
    )
    with tft_beam.Context(temp_dir=str(tmp_path), force_tf_compat_v1=False):
        (ids, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: {"c": _categorical(inputs["c"], "c", top_k=2)}
        )
    assert sorted({row["c"] for row in ids}) == [0, 1, 2]
    assert [row["c"] for row in ids][-1] == 2


def test_beam_runs_multi_processing_for_many_rows_even_when_the_file_is_small(repo_root):
    config = load_config(repo_root / "configs" / "penguins.yaml")
    assert beam_args(config, data_bytes=26 * 2**20, rows=10_000) == [
        "--direct_running_mode=in_memory"
    ]
    many = beam_args(config, data_bytes=26 * 2**20, rows=1_000_000)
    assert many[0] == "--direct_running_mode=multi_processing"
    assert beam_args(config, data_bytes=200 * 2**20)[0] == "--direct_running_mode=multi_processing"


def test_example_gen_reads_fewer_csv_files_than_workers_in_process(repo_root, tmp_path):
    """Each CSV file is read by one worker from start to end: with one file, the ExampleGen
    runs in_memory while the other data components use the pipeline's workers."""
    import dataclasses

    from pipeline import local_runner, sources

    config = load_config(repo_root / "configs" / "penguins.yaml", output_root=str(tmp_path))
    config = dataclasses.replace(config, beam=dataclasses.replace(config.beam, num_workers=2))
    staged = dataclasses.replace(sources.stage(config), rows=1_000_000)
    assert staged.sequential_files == 1

    def args(staged):
        pipeline = local_runner.build_local_pipeline(config, staged)
        [example_gen] = [c for c in pipeline.components if c.id == "CsvExampleGen"]
        return example_gen.executor_spec.beam_pipeline_args, pipeline.beam_pipeline_args

    parallel = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    in_process = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    assert args(staged) == (parallel + in_process, parallel)
    assert args(dataclasses.replace(staged, sequential_files=2)) == (parallel, parallel)


def test_the_babynames_config_loads_with_embeddings_and_a_tuner_sample(repo_root, tmp_path):
    raw = yaml.safe_load((repo_root / "configs" / "babynames.yaml").read_text())
    (tmp_path / "names.csv").write_text("year,sex,name,n,prop\n1880,F,Mary,7065,0.07\n")
    raw["data"]["source"] = str(tmp_path / "names.csv")
    (tmp_path / "babynames.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "babynames.yaml")
    assert config.categorical_features == ("name",)
    assert config.model.embeddings.min_vocabulary == 64 and config.model.embeddings.dim is None
    assert config.tuner.max_train_examples == 100_000
    assert config.tuner.objective == "accuracy"
    assert config.training.batch_size is None
