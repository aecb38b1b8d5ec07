"""The quantization: section of the pipeline config: defaults and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import QuantizationConfig, load_config
from pipeline.errors import ConfigError

PENGUINS = Path(__file__).resolve().parent.parent / "configs" / "penguins.yaml"


def _config_with(tmp_path: Path, quantization: dict | None):
    raw = yaml.safe_load(PENGUINS.read_text())
    raw["data"]["source"] = "palmerpenguins"
    raw["schema_file"] = str(PENGUINS.parent / raw["schema_file"])
    raw.pop("quantization", None)
    if quantization is not None:
        raw["quantization"] = quantization
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_penguins_config_serves_the_quantized_model():
    quantization = load_config(PENGUINS).quantization
    assert quantization.enabled and quantization.serve == "quantized"
    assert quantization.method == "int8_weights"
    # One of the 69 eval birds (0.0145), no more.
    assert quantization.max_metric_drop == pytest.approx(0.015)


def test_missing_section_gives_the_defaults(tmp_path):
    assert _config_with(tmp_path, None).quantization == QuantizationConfig()


def test_values_are_read(tmp_path):
    quantization = _config_with(
        tmp_path,
        {
            "max_metric_drop": 0.05,
            "representative_samples": 7,
            "serve": "float",
            "on_guard_failure": "push_nothing",
            "pruning": {"enabled": True, "target_sparsity": 0.8, "epochs": 2},
        },
    ).quantization
    assert quantization.max_metric_drop == pytest.approx(0.05)
    assert quantization.representative_samples == 7
    assert (quantization.serve, quantization.on_guard_failure) == ("float", "push_nothing")
    assert quantization.pruning.enabled and quantization.pruning.target_sparsity == pytest.approx(
        0.8
    )


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ({"method": "int4_magic"}, "quantization.method", "expected one of"),
        ({"representative_samples": 0}, "quantization.representative_samples", "must be >= 1"),
        ({"max_metric_drop": -0.1}, "quantization.max_metric_drop", r"must be in \[0, 1\]"),
        ({"max_metric_drop": 1.5}, "quantization.max_metric_drop", r"must be in \[0, 1\]"),
        ({"serve": "both"}, "quantization.serve", "expected one of"),
        ({"on_guard_failure": "panic"}, "quantization.on_guard_failure", "expected one of"),
        (
            {"pruning": {"target_sparsity": 1.0}},
            "quantization.pruning.target_sparsity",
            r"must be in \(0, 1\)",
        ),
        ({"enabled": "yes"}, "quantization.enabled", "expected bool"),
        ({"methd": "int8_weights"}, "quantization.methd", "unknown key"),
    ],
)
def test_bad_values_name_the_key(tmp_path, section, key, problem):
    with pytest.raises(ConfigError, match=problem) as info:
        _config_with(tmp_path, section)
    assert info.value.key == key
    assert str(tmp_path / "config.yaml") in str(info.value)
