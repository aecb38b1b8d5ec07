"""The README's bring-your-own-data flow on a CSV with missing values: infer, curate, run."""

import pytest
import yaml

from pipeline import cli, local_runner
from pipeline.config import load_config
from pipeline.data import read_source

pytestmark = pytest.mark.e2e


def test_inferred_schema_accepts_the_data_it_was_inferred_from(tmp_path, repo_root):
    """`schema` infers from what ExampleGen makes of the file, so the run it is written for passes.

    Penguins has missing numeric values ("NA", and here also empty cells): ExampleGen
    writes them as empty features, which a schema inferred from the raw CSV forbids.
    """
    data = tmp_path / "home" / "data"
    data.mkdir(parents=True)
    lines = read_source("palmerpenguins").splitlines()
    fields = lines[10].split(",")
    fields[2] = ""  # an empty numeric cell besides the NA markers
    lines[10] = ",".join(fields)
    (data / "penguins.csv").write_text("\n".join(lines) + "\n")
    raw = yaml.safe_load((repo_root / "configs" / "penguins.yaml").read_text())
    # As in the README: the config names the schema file that `schema` is about to write.
    raw.update(pipeline_name="mine", model_name="mine", schema_file="schemas/mine.pbtxt")
    raw["data"].update(source=str(data / "penguins.csv"), na_values=["NA", ""])
    raw["tuner"].update(max_trials=2, epochs=10)
    raw["training"].update(epochs=15)
    raw["quantization"].update(enabled=False)
    config_file = tmp_path / "mine.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    out = str(tmp_path / "out")
    schema = tmp_path / "schemas" / "mine.pbtxt"

    code = cli.main(
        ["schema", "--config", str(config_file), "--out", str(schema), "--output-root", out]
    )

    assert code == 0
    assert 'name: "bill_length_mm"' in schema.read_text()
    summary = local_runner.run(load_config(config_file, output_root=out))
    assert summary["status"] == "succeeded", summary["error"]
    assert summary["components"]["ImportSchemaGen"]["status"] == "succeeded"
    assert summary["components"]["AnomalyGate"]["status"] == "succeeded"
    assert summary["pushed"] is not None
