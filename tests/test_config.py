"""Config loading: the default config, and errors that name the file and the key."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import IntRange, load_config
from pipeline.errors import ConfigError


@pytest.fixture
def penguins(repo_root) -> dict:
    return yaml.safe_load((repo_root / "configs" / "penguins.yaml").read_text())


def _write(tmp_path: Path, raw: dict, repo_root: Path) -> Path:
    raw = dict(raw)
    if raw.get("schema_file"):
        raw["schema_file"] = str(repo_root / "configs" / raw["schema_file"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_default_config_loads(repo_root):
    config = load_config(repo_root / "configs" / "penguins.yaml")
    assert config.pipeline_name == "penguins"
    assert config.task == "classification"
    assert config.label == "species"
    assert config.features == (
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "island",
        "sex",
    )
    assert config.tuner.max_trials >= 10
    assert config.tuner.search_space.optimizer == ("adam", "rmsprop")
    assert config.tuner.search_space.learning_rate.sampling == "log"
    assert config.evaluation.lower_bound == 0.9
    assert config.training.warm_start is True
    assert Path(config.schema_file).is_file()
    assert config.output_root == str(repo_root / "output")
    assert config.serving_root == str(repo_root / "output" / "serving")


def test_output_root_override(repo_root, tmp_path):
    config = load_config(repo_root / "configs" / "penguins.yaml", output_root=str(tmp_path))
    assert config.output_root == str(tmp_path)
    assert config.serving_root == str(tmp_path / "serving")


@pytest.mark.parametrize(
    "change, key, message",
    [
        (lambda c: c.pop("label"), "label", "is required"),
        (
            lambda c: c.update(task="ranking"),
            "task",
            "expected one of ['classification', 'regression']",
        ),
        (lambda c: c.update(colour="blue"), "colour", "unknown key"),
        (lambda c: c["tuner"].update(max_trials=0), "tuner.max_trials", "must be >= 1"),
        (lambda c: c["tuner"].update(max_trials="ten"), "tuner.max_trials", "expected int"),
        (lambda c: c["training"].update(warm_start="yes"), "training.warm_start", "expected bool"),
        (
            lambda c: c["tuner"]["search_space"].update(optimizer=["adam", "lion"]),
            "tuner.search_space.optimizer",
            "unknown optimizer 'lion'",
        ),
        (
            lambda c: c["tuner"]["search_space"]["units"].update(min=64, max=8),
            "tuner.search_space.units.max",
            "must be >= min",
        ),
        (
            lambda c: c["tuner"]["search_space"]["dropout"].update(max=1.5),
            "tuner.search_space.dropout.max",
            "must be < 1.0",
        ),
        (
            lambda c: c["tuner"]["search_space"]["l2"].update(min=0.0),
            "tuner.search_space.l2.min",
            "must be > 0 with log sampling",
        ),
        (
            lambda c: c["features"].update(numeric=["bill_length_mm", "bill_length_mm"]),
            "features",
            "listed twice",
        ),
        (
            lambda c: c["features"].update(categorical=["species"]),
            "label",
            "also listed as a feature",
        ),
        (
            lambda c: c["evaluation"].update(upper_bound=0.5),
            "evaluation.upper_bound",
            "higher-is-better",
        ),
        (
            lambda c: c["evaluation"].update(max_regression=-0.1),
            "evaluation.max_regression",
            "must be >= 0",
        ),
        (lambda c: c["evaluation"].update(metric="f1"), "evaluation.metric", "expected one of"),
        (lambda c: c["data"].update(source="missing.csv"), "data.source", "file not found"),
        # Bounds outside the metric's range would bless anything (or nothing).
        (lambda c: c["evaluation"].update(lower_bound=-5), "evaluation.lower_bound", "[0, 1]"),
        (lambda c: c["evaluation"].update(lower_bound=1.5), "evaluation.lower_bound", "[0, 1]"),
        (lambda c: c["evaluation"].update(max_regression=2), "evaluation.max_regression", "[0, 1]"),
        (lambda c: c["data"].update(encoding="utf-9"), "data.encoding", "unknown text encoding"),
        (lambda c: c["data"].update(na_values=["NA", 3]), "data.na_values", "list of strings"),
        (lambda c: c["beam"].update(mode="spark"), "beam.mode", "expected one of"),
        (lambda c: c["model"].update(family="gbdt"), "model.family", "expected one of"),
        (lambda c: c.update(pipeline_name="my pipeline"), "pipeline_name", "letters, digits"),
    ],
)
def test_bad_values_name_the_key(penguins, tmp_path, repo_root, change, key, message):
    change(penguins)
    path = _write(tmp_path, penguins, repo_root)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key
    assert message in str(err.value)
    assert str(err.value).startswith(str(path))


def test_unreadable_and_non_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [classification\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_readme_config_example_loads(tmp_path, repo_root, monkeypatch):
    """The bring-your-own-data example in README.md is a valid config as written."""
    readme = (repo_root / "README.md").read_text()
    section = readme[readme.index("## Bring your own data") :]
    block = section[section.index("```yaml\n") + len("```yaml\n") :]
    text = block[: block.index("```")]
    raw = yaml.safe_load(text)
    monkeypatch.setenv("HOME", str(tmp_path))
    source = Path(raw["data"]["source"].replace("~", str(tmp_path), 1))
    source.parent.mkdir(parents=True)
    source.write_text("tenure\n")
    (tmp_path / raw["schema_file"]).parent.mkdir(parents=True)
    (tmp_path / raw["schema_file"]).write_text("")
    path = tmp_path / "churn.yaml"
    path.write_text(text)
    config = load_config(path)
    assert config.data.na_values == ("NA", "")
    assert config.data.source == str(source)
    assert config.label == raw["label"]


def test_paths_may_start_at_the_home_directory(penguins, tmp_path, repo_root, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sales.csv").write_text("a\n")
    penguins["data"]["source"] = "~/sales.csv"
    config = load_config(_write(tmp_path, penguins, repo_root))
    assert config.data.source == str(tmp_path / "sales.csv")


def test_an_output_root_the_host_cannot_see_is_refused(penguins, tmp_path, repo_root, monkeypatch):
    monkeypatch.setenv("TFXP_SHARED_PATHS", str(tmp_path))
    penguins["outputs"] = {"root": "/"}
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, penguins, repo_root))
    assert err.value.key == "outputs.root"
    assert "outside the directories the environment shares with the host" in str(err.value)
    penguins["outputs"] = {"root": str(tmp_path / "out"), "serving_root": "/serving"}
    with pytest.raises(ConfigError, match="outputs.serving_root: /serving is outside"):
        load_config(_write(tmp_path, penguins, repo_root))


def test_a_source_only_the_host_sees_is_read_through_the_host_root(
    penguins, tmp_path, repo_root, monkeypatch
):
    host_file = tmp_path / "host" / "opt" / "sales" / "data.csv"
    host_file.parent.mkdir(parents=True)
    host_file.write_text("a\n")
    monkeypatch.setenv("TFXP_HOST_ROOT", str(tmp_path / "host"))
    penguins["data"]["source"] = "/opt/sales/data.csv"
    assert load_config(_write(tmp_path, penguins, repo_root)).data.source == str(host_file)
    penguins["data"]["source"] = "/opt/sales/other.csv"
    with pytest.raises(ConfigError, match="data.source: file not found: /opt/sales/other.csv"):
        load_config(_write(tmp_path, penguins, repo_root))


@pytest.mark.parametrize("bound", [-1.0, 0.0])
def test_regression_upper_bound_must_be_positive(penguins, tmp_path, repo_root, bound):
    penguins.update(task="regression", label="body_mass_g", schema_file=None)
    penguins["features"]["numeric"] = ["bill_length_mm"]
    penguins["evaluation"] = {"metric": "mae", "upper_bound": bound}
    with pytest.raises(ConfigError, match="evaluation.upper_bound: mae is >= 0"):
        load_config(_write(tmp_path, penguins, repo_root))


def test_regression_config(penguins, tmp_path, repo_root):
    penguins.update(task="regression", label="body_mass_g", schema_file=None)
    penguins["features"]["numeric"] = ["bill_length_mm", "flipper_length_mm"]
    penguins["evaluation"] = {"metric": "mae", "upper_bound": 400.0}
    config = load_config(_write(tmp_path, penguins, repo_root))
    assert config.task == "regression"
    assert config.evaluation.metric == "mae"
    assert config.schema_file is None


@pytest.fixture
def fashion(repo_root) -> dict:
    return yaml.safe_load((repo_root / "configs" / "fashion_mnist.yaml").read_text())


def test_fashion_mnist_config_loads(repo_root):
    config = load_config(repo_root / "configs" / "fashion_mnist.yaml")
    assert (config.data.format, config.data.source) == ("image_folder", "fashion-mnist")
    # All 60,000 training and 10,000 test images.
    assert (config.data.max_train_examples, config.data.max_eval_examples) == (None, None)
    assert config.image_features == ("image",) and config.image_shape == (28, 28, 1)
    assert config.features == ("image",)
    assert config.model_family == "cnn"
    assert config.model.augmentation.flip is False
    assert config.tuner.search_space.convs_per_block == IntRange(1, 1, 1)
    assert config.tuner.search_space.lr_schedule == ("cosine",)
    assert config.tuner.search_space.kernel_size == (3,)
    assert config.tuner.search_space.batch_norm == (True,)
    assert config.tuner.search_space.pooling == ("flatten",)
    assert config.tuner.max_train_examples == 6000
    assert config.quantization.enabled and config.quantization.serve == "quantized"
    assert config.quantization.max_metric_drop == pytest.approx(0.005)


@pytest.mark.parametrize(
    "change, key, message",
    [
        (lambda c: c["features"].pop("image_shape"), "features.image_shape", "is required"),
        (
            lambda c: c["features"].update(image_shape=[28, 28, 2]),
            "features.image_shape",
            "1, 3 or 4 channels",
        ),
        (lambda c: c["features"].update(image_shape=[28, 28]), "features.image_shape", "[height"),
        (
            lambda c: c["features"].update(numeric=["x"]),
            "features",
            "one image per example",
        ),
        (lambda c: c["data"].update(format="parquet"), "data.format", "expected one of"),
        (lambda c: c["data"].update(source="no/such/folder"), "data.source", "directory not found"),
        (
            lambda c: c["model"]["augmentation"].update(translate=1.5),
            "model.augmentation.translate",
            "must be in [0, 1)",
        ),
        (
            lambda c: c["tuner"]["search_space"].update(kernel_size=[]),
            "tuner.search_space.kernel_size",
            "non-empty list of int",
        ),
        (lambda c: c["tuner"].update(max_train_examples=0), "tuner.max_train_examples", ">= 1"),
        (
            lambda c: c["tuner"]["search_space"].update(pooling=["max"]),
            "tuner.search_space.pooling",
            "unknown pooling 'max'",
        ),
        (
            lambda c: c["tuner"]["search_space"].update(pooling=["global_max"]),
            "tuner.search_space.pooling",
            "family cnn pools with one of ['global_average', 'flatten']",
        ),
        (
            lambda c: c["tuner"]["search_space"].update(conv_blocks={"min": 0, "max": 2}),
            "tuner.search_space.conv_blocks.min",
            "at least 1 conv block",
        ),
        (
            lambda c: c["tuner"]["search_space"].update(batch_norm=["yes"]),
            "tuner.search_space.batch_norm",
            "non-empty list of bool",
        ),
    ],
)
def test_bad_image_values_name_the_key(fashion, tmp_path, repo_root, change, key, message):
    change(fashion)
    path = _write(tmp_path, fashion, repo_root)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key
    assert message in str(err.value)


def test_the_family_must_fit_the_features(fashion, tmp_path, repo_root):
    fashion["model"]["family"] = "mlp"
    with pytest.raises(ConfigError, match="model.family: image features need family cnn"):
        load_config(_write(tmp_path, fashion, repo_root))


def test_cnn_needs_an_image(penguins, tmp_path, repo_root):
    penguins["model"]["family"] = "cnn"
    with pytest.raises(ConfigError, match="model.family: cnn needs an image feature"):
        load_config(_write(tmp_path, penguins, repo_root))


def test_image_features_need_the_image_folder_format(penguins, tmp_path, repo_root):
    penguins["features"].update(image=["photo"], image_shape=[8, 8, 3])
    with pytest.raises(ConfigError, match="features.image: image features need data.format"):
        load_config(_write(tmp_path, penguins, repo_root))
    penguins["features"] = {"numeric": ["bill_length_mm"]}
    penguins["data"]["max_examples"] = {"train": 10}
    with pytest.raises(ConfigError, match="data.max_examples: only applies to data.format"):
        load_config(_write(tmp_path, penguins, repo_root))


@pytest.mark.parametrize(
    "change, key, message",
    [
        (
            lambda c: c["tuner"]["search_space"].update(lr_schedule=["cosine", "step"]),
            "tuner.search_space.lr_schedule",
            "unknown schedule 'step'",
        ),
        (
            lambda c: c["tuner"]["search_space"].update(lr_decay_rate={"min": 0.9, "max": 1.5}),
            "tuner.search_space.lr_decay_rate.max",
            "must be < 1.0",
        ),
        (
            lambda c: c["tuner"]["search_space"].update(lr_decay_rate={"min": 0.0, "max": 0.5}),
            "tuner.search_space.lr_decay_rate.min",
            "must be > 0",
        ),
    ],
)
def test_bad_schedules_name_the_key(penguins, tmp_path, repo_root, change, key, message):
    change(penguins)
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, penguins, repo_root))
    assert err.value.key == key
    assert message in str(err.value)


def test_schedules_default_to_a_constant_rate_and_may_be_searched(penguins, tmp_path, repo_root):
    space = load_config(_write(tmp_path, penguins, repo_root)).tuner.search_space
    assert space.lr_schedule == ("constant",)
    penguins["tuner"]["search_space"]["lr_schedule"] = ["constant", "cosine", "exponential"]
    penguins["tuner"]["search_space"]["lr_decay_rate"] = {"min": 0.8, "max": 0.95}
    space = load_config(_write(tmp_path, penguins, repo_root)).tuner.search_space
    assert space.lr_schedule == ("constant", "cosine", "exponential")
    assert (space.lr_decay_rate.min, space.lr_decay_rate.max) == (0.8, 0.95)


def _saved_model(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(b"")
    return directory


def test_a_base_model_is_a_keras_file_a_saved_model_or_the_newest_pushed_version(
    fashion, tmp_path, repo_root
):
    keras_file = tmp_path / "backbone" / "Format-Keras" / "model.keras"
    keras_file.parent.mkdir(parents=True)
    keras_file.write_bytes(b"")
    fashion["model"]["base_model"] = str(keras_file)
    config = load_config(_write(tmp_path, fashion, repo_root))
    assert config.model.base_model == str(keras_file)
    assert (config.model.fine_tune.frozen_epochs, config.model.fine_tune.learning_rate_factor) == (
        3,
        0.1,
    )
    saved = _saved_model(tmp_path / "saved")
    fashion["model"].update(base_model="saved", fine_tune={"frozen_epochs": 0})
    assert load_config(_write(tmp_path, fashion, repo_root)).model.base_model == str(saved)
    serving = tmp_path / "serving" / "fashion_mnist"
    _saved_model(serving / "1700000009")
    newest = _saved_model(serving / "1700000010")
    (serving / "1700000011").mkdir()  # a push still being written: no saved_model.pb yet
    fashion["model"]["base_model"] = "serving/fashion_mnist"
    assert load_config(_write(tmp_path, fashion, repo_root)).model.base_model == str(newest)


@pytest.mark.parametrize(
    "change, key, message",
    [
        (
            lambda c, _: c["model"].update(base_model="no/such/model.keras"),
            "model.base_model",
            "file not found",
        ),
        (
            lambda c, _: c["model"].update(base_model="no/such/dir"),
            "model.base_model",
            "directory not found",
        ),
        (
            lambda c, tmp: c["model"].update(base_model=str(tmp)),
            "model.base_model",
            "holds no saved_model.pb, nor versions",
        ),
        (
            lambda c, _: c["model"].update(fine_tune={"frozen_epochs": 2}),
            "model.fine_tune",
            "only applies with model.base_model",
        ),
        (
            lambda c, tmp: c["model"].update(
                base_model=str(_saved_model(tmp / "m")), fine_tune={"frozen_epochs": 99}
            ),
            "model.fine_tune.frozen_epochs",
            "must be <= training.epochs (18)",
        ),
        (
            lambda c, tmp: c["model"].update(
                base_model=str(_saved_model(tmp / "m")), fine_tune={"learning_rate_factor": 0}
            ),
            "model.fine_tune.learning_rate_factor",
            "must be in (0, 1]",
        ),
        (
            lambda c, tmp: c["model"].update(
                base_model=str(_saved_model(tmp / "m")), fine_tune={"frozen": 2}
            ),
            "model.fine_tune.frozen",
            "unknown key",
        ),
    ],
)
def test_bad_base_models_name_the_key(fashion, tmp_path, repo_root, change, key, message):
    change(fashion, tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, fashion, repo_root))
    assert err.value.key == key
    assert message in str(err.value)


def test_a_base_model_needs_the_cnn_family(penguins, tmp_path, repo_root):
    penguins["model"]["base_model"] = str(_saved_model(tmp_path / "m"))
    with pytest.raises(ConfigError, match="model.base_model: transfer learning .* family cnn"):
        load_config(_write(tmp_path, penguins, repo_root))


def test_the_tuner_objective_follows_the_evaluation_metric(tmp_path, penguins, repo_root):
    config = load_config(_write(tmp_path, penguins, repo_root))
    assert config.tuner.objective == "accuracy"
    assert config.tuner.max_train_examples == 100_000
    for metric, objective in (("auc", "loss"), ("precision", "loss")):
        penguins["evaluation"] = {"metric": metric}
        assert load_config(_write(tmp_path, penguins, repo_root)).tuner.objective == objective
    penguins["tuner"]["objective"] = "loss"
    assert load_config(_write(tmp_path, penguins, repo_root)).tuner.objective == "loss"
    penguins["tuner"]["objective"] = "mae"
    with pytest.raises(ConfigError, match=r"tuner\.objective.*\['loss', 'accuracy'\]"):
        load_config(_write(tmp_path, penguins, repo_root))


def test_the_batch_size_is_chosen_from_the_data_unless_configured(tmp_path, penguins, repo_root):
    del penguins["training"]["batch_size"]
    config = load_config(_write(tmp_path, penguins, repo_root))
    assert (config.training.batch_size, config.training.cache_max_mb) == (None, 256)
