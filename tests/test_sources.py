"""Data sources: what each data format asks of StatisticsGen."""

import tensorflow_data_validation as tfdv

from pipeline.config import load_config
from pipeline.pipeline import data_components


def _stats_options(repo_root, tmp_path, name):
    config = load_config(repo_root / "configs" / name, output_root=str(tmp_path))
    _, statistics_gen = data_components(config, str(tmp_path / "data"))
    options = statistics_gen.exec_properties.get("stats_options_json")
    return tfdv.StatsOptions.from_json(options) if options else None


def test_image_data_gets_tfdv_image_domain_statistics_and_csv_data_the_defaults(
    repo_root, tmp_path
):
    assert _stats_options(repo_root, tmp_path, "fashion_mnist.yaml").enable_semantic_domain_stats
    # Unchanged for CSV, so penguins' StatisticsGen stays cached and as fast as before.
    assert _stats_options(repo_root, tmp_path, "penguins.yaml") is None
