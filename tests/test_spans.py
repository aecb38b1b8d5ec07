"""Data spans (pipeline/spans.py): discovery, the window, {SPAN} patterns, staging checks,
config errors, span drift on real penguins, and the window's wiring in the compiled pipeline."""

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
import yaml
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from pipeline import data, sources, spans
from pipeline.config import load_config
from pipeline.data import read_source
from pipeline.errors import ConfigError

_PENGUINS = list(csv.DictReader(io.StringIO(read_source("palmerpenguins"))))


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _year(year: str) -> list[dict]:
    return [r for r in _PENGUINS if r["year"] == year]


def _config(tmp_path: Path, repo_root: Path, source: str, **spans_config):
    raw = yaml.safe_load((repo_root / "configs" / "penguins.yaml").read_text())
    raw["schema_file"] = str(repo_root / "configs" / raw["schema_file"])
    raw["data"]["source"] = source
    raw["data"]["spans"] = spans_config
    path = tmp_path / "penguins.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, output_root=str(tmp_path / "out"))


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a,b\n1,2\n")


def test_discovers_a_folder_of_span_folders_in_number_order(tmp_path):
    for n in (8, 9, 10):
        _touch(tmp_path / f"span-{n}" / "part-a.csv")
    _touch(tmp_path / "span-9" / "part-b.csv")
    (tmp_path / "notes.txt").write_text("not a span")
    found = spans.discover(str(tmp_path), "csv")
    # By number, not by name ("span-10" < "span-8" as text).
    assert [s.number for s in found] == [8, 9, 10]
    assert found[1].paths == (
        str(tmp_path / "span-9" / "part-a.csv"),
        str(tmp_path / "span-9" / "part-b.csv"),
    )


def test_gap_in_the_numbering_names_the_missing_span(tmp_path):
    for n in (1, 2, 4):
        _touch(tmp_path / f"span-{n}" / "data.csv")
    with pytest.raises(spans.SpanError, match=r"span 3 is missing between spans 1 and 4"):
        spans.discover(str(tmp_path), "csv")


@pytest.mark.parametrize(
    "layout, pattern",
    [
        (["{n}/rows-a.csv", "{n}/rows-b.csv"], "{root}/{SPAN}/rows-*.csv"),
        (["penguins-{n}.csv"], "{root}/penguins-{SPAN}.csv"),
        (["day-{n}/x.csv"], "{root}/day-{SPAN}"),
    ],
)
def test_span_placeholder_patterns(tmp_path, layout, pattern):
    for n in (7, 8):
        for file in layout:
            _touch(tmp_path / file.format(n=n))
    _touch(tmp_path / "other.csv")
    found = spans.discover(pattern.format(root=tmp_path, SPAN="{SPAN}"), "csv")
    assert [s.number for s in found] == [7, 8]
    assert all(len(s.paths) == len(layout) for s in found)


def test_no_span_matched_says_what_was_expected(tmp_path):
    (tmp_path / "data.csv").write_text("a\n1\n")
    with pytest.raises(spans.SpanError, match=r"span-\{SPAN\}: no span matches.*span-1"):
        spans.discover(str(tmp_path), "csv")


def test_a_span_numbered_twice_is_refused(tmp_path):
    _touch(tmp_path / "span-1" / "a.csv")
    _touch(tmp_path / "span-01" / "a.csv")
    with pytest.raises(spans.SpanError, match=r"span 1 is numbered twice \(\['01', '1'\]\)"):
        spans.discover(str(tmp_path), "csv")


def test_a_span_without_data_of_the_format(tmp_path):
    (tmp_path / "span-1").mkdir()
    with pytest.raises(spans.SpanError, match=r"span 1 .* holds no CSV file"):
        spans.discover(str(tmp_path), "csv")
    with pytest.raises(spans.SpanError, match=r"span 1 .* expected a UCR _TRAIN table"):
        spans.discover(str(tmp_path), "ucr")


def test_window_and_the_spans_to_stage(tmp_path):
    found = tuple(spans.Span(n, ()) for n in (3, 4, 5, 6))
    assert spans.window(found, 2) == (5, 6)
    assert spans.window(found, 10) == (3, 4, 5, 6)
    assert spans.to_stage(found, 2) == (5, 6)
    # A window of one still stages the span before it: the newest span's drift needs it.
    assert spans.to_stage(found, 1) == (5, 6)


def test_span_input_puts_every_split_under_the_span_folder():
    plain = tfx.proto.Input(
        splits=[
            tfx.proto.Input.Split(name="train", pattern="train/*"),
            tfx.proto.Input.Split(name="eval", pattern="eval/*"),
        ]
    )
    spanned = spans.span_input(plain)
    assert [s.pattern for s in spanned.splits] == ["span-{SPAN}/train/*", "span-{SPAN}/eval/*"]
    assert [s.pattern for s in plain.splits] == ["train/*", "eval/*"]
    static = spans.range_config(4).static_range
    assert (static.start_span_number, static.end_span_number) == (4, 4)


def test_config_errors_name_the_key(tmp_path, repo_root):
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match=r"data\.spans\.window.*must be >= 1"):
        _config(tmp_path, repo_root, str(tmp_path / "data"), window=0)
    with pytest.raises(ConfigError, match=r"data\.spans\.drift.*expected one of"):
        _config(tmp_path, repo_root, str(tmp_path / "data"), drift="fail")
    with pytest.raises(ConfigError, match=r"data\.spans\.windows.*unknown key"):
        _config(tmp_path, repo_root, str(tmp_path / "data"), windows=2)
    with pytest.raises(ConfigError, match=r"data\.source.*\{SPAN\} 2 times"):
        _config(tmp_path, repo_root, str(tmp_path / "{SPAN}/{SPAN}.csv"))
    with pytest.raises(ConfigError, match=r"data\.source.*directory not found"):
        _config(tmp_path, repo_root, str(tmp_path / "missing" / "{SPAN}.csv"))
    config = _config(tmp_path, repo_root, str(tmp_path / "data" / "p-{SPAN}.csv"), window=2)
    assert config.data.spans.window == 2 and config.data.spans.drift == "warn"
    assert config.data.source == str(tmp_path / "data" / "p-{SPAN}.csv")


def test_staging_a_span_with_another_header_names_the_span(tmp_path, repo_root):
    _write_csv(tmp_path / "data" / "span-1" / "a.csv", _year("2007"))
    changed = [{**r, "colony": "x"} for r in _year("2008")]
    _write_csv(tmp_path / "data" / "span-2" / "a.csv", changed)
    config = _config(tmp_path, repo_root, str(tmp_path / "data"))
    with pytest.raises(
        spans.SpanError, match=r"span 2 \(.*span-2/a\.csv\).*columns added \['colony'\]"
    ):
        sources.stage_spans(config)


def test_csv_spans_are_read_where_they_are_span_by_span(tmp_path, repo_root):
    for n, year in enumerate(("2007", "2008", "2009"), start=1):
        _write_csv(tmp_path / "data" / f"span-{n}" / "a.csv", _year(year))
    config = _config(tmp_path, repo_root, str(tmp_path / "data"), window=2)
    staged = sources.stage_spans(config)
    assert staged.window == (2, 3) and staged.newest == 3 and staged.previous == 2
    # Nothing is copied: ExampleGen reads the user's span folders.
    assert staged.data.directory == str(tmp_path / "data")
    assert not (Path(data.staging_directory(config)) / "span-3").exists()
    assert staged.data.rows == len(_year("2008")) + len(_year("2009"))
    assert staged.data.sequential_files == 2
    # Read from every span on disk (what the Kubeflow compiler needs).
    assert sources.label_values(config) == ("Adelie", "Chinstrap", "Gentoo")
    root = staged.data.directory
    example_gen = sources.source_of(config).example_gen(config, root, spans.range_config(3))
    # TFX finds the span's file through the pattern and fingerprints exactly it.
    size = (tmp_path / "data" / "span-3" / "a.csv").stat().st_size
    assert f"num_files:1,total_bytes:{size}," in spans.input_fingerprint(example_gen, 3)
    assert spans.input_fingerprint(example_gen, 2) != spans.input_fingerprint(example_gen, 3)


def test_csv_spans_numbered_with_leading_zeros_are_refused(tmp_path, repo_root):
    _write_csv(tmp_path / "data" / "span-01" / "a.csv", _year("2007"))
    config = _config(tmp_path, repo_root, str(tmp_path / "data"))
    with pytest.raises(spans.SpanError, match=r"span-01: .*without leading zeros"):
        sources.stage_spans(config)


def _statistics(rows: list[dict]):
    frame = pd.DataFrame(rows).drop(columns=["year", "rowid"], errors="ignore")
    frame = frame.replace("NA", None)
    for column in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
        frame[column] = pd.to_numeric(frame[column])
    return tfdv.generate_statistics_from_dataframe(frame)


def test_span_drift_finds_a_new_island_and_stop_names_span_and_features(tmp_path, repo_root):
    (tmp_path / "data").mkdir()
    config = _config(tmp_path, repo_root, str(tmp_path / "data"), drift="stop")
    schema = tfdv.load_schema_text(config.schema_file)
    previous = _statistics(_year("2007"))
    # As measured by the monitor: the next year is no drift; Biscoe's birds alone are.
    same = spans.span_drift(config, _statistics(_year("2008")), previous, schema, (2, 1))
    assert same["drifted_features"] == []
    assert set(same["features"]) == set(config.features) | {"species"}
    assert same["features"]["island"]["statistic"] == "L_infinity"
    assert same["features"]["body_mass_g"]["statistic"] == "jensen_shannon_divergence"
    assert spans.enforce(same) is None

    biscoe = [r for r in _PENGUINS if r["island"] == "Biscoe"]
    drift = spans.span_drift(config, _statistics(biscoe), previous, schema, (2, 1))
    assert "island" in drift["drifted_features"] and "species" in drift["drifted_features"]
    assert drift["features"]["island"]["value"] > 0.25
    with pytest.raises(
        spans.SpanDriftError, match=r"span 2 drifted from span 1: island L_infinity 0\.\d+ > 0\.25"
    ):
        spans.enforce(drift)
    line = spans.enforce({**drift, "action": "warn"})
    assert line.startswith("span 2 drifted from span 1: island")


def _examples(artifact_id: int, span: int, version: int | None = None):
    artifact = standard_artifacts.Examples()
    artifact.id = artifact_id
    # Where TFX 1.21's ExampleGen records them.
    artifact.set_int_custom_property("span", span)
    if version is not None:
        artifact.set_int_custom_property("version", version)
    return artifact


def test_span_window_keeps_the_latest_spans_and_the_latest_ingest_of_each():
    given = [_examples(1, 1), _examples(2, 2), _examples(3, 3), _examples(4, 2), _examples(5, 4)]
    strategy = spans.SpanWindowStrategy(window=3)
    resolved = strategy.resolve_artifacts(None, {"examples": given})["examples"]
    # Span 2 was ingested twice (its files changed): the later one counts.
    assert [(spans.span_of(a.mlmd_artifact), a.id) for a in resolved] == [(2, 4), (3, 3), (4, 5)]
    fewer = spans.SpanWindowStrategy(window=5).resolve_artifacts(None, {"examples": given[:1]})
    assert [a.id for a in fewer["examples"]] == [1]
    # A higher version wins over a later ingest of a lower one.
    versions = [_examples(7, 1, version=2), _examples(8, 1, version=1)]
    assert [a.id for a in strategy.resolve_artifacts(None, {"examples": versions})["examples"]] == [
        7
    ]


def test_the_compiled_pipeline_trains_on_a_rolling_window_of_every_run(tmp_path, repo_root):
    from tfx.orchestration.portable import tfx_runner

    from pipeline.pipeline import create_pipeline

    _write_csv(tmp_path / "data" / "span-1" / "a.csv", _year("2007"))
    config = _config(tmp_path, repo_root, str(tmp_path / "data"), window=2)
    root = data.staging_directory(config)
    kwargs = dict(
        data_root=root,
        pipeline_root=str(tmp_path / "root"),
        serving_dir=str(tmp_path / "serving"),
        label_classes=("Adelie", "Chinstrap", "Gentoo"),
        code_version="test",
        span=1,
    )
    ir = tfx_runner._make_pipeline_proto(create_pipeline(config, **kwargs))
    nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}
    example_gen = nodes["CsvExampleGen"]
    static = json.loads(example_gen.parameters.parameters["range_config"].field_value.string_value)[
        "static_range"
    ]
    assert static == {"start_span_number": 1, "end_span_number": 1}
    # A Resolver after this run's ExampleGen, over every run's ExampleGen outputs.
    window = nodes["span_window_resolver"]
    assert "CsvExampleGen" in window.upstream_nodes
    [channel] = window.inputs.inputs["_CsvExampleGen.examples"].channels
    # Every run's: queried by pipeline and node, not narrowed to the pipeline run.
    assert {q.type.name for q in channel.context_queries} == {"pipeline", "node"}
    assert channel.output_key == "examples"
    transform_examples = nodes["Transform"].inputs.inputs["examples"].channels[0]
    assert transform_examples.producer_node_query.id == "span_window_resolver"
    assert nodes["Evaluator"].inputs.inputs["examples"].channels[0].producer_node_query.id == (
        "CsvExampleGen"
    )
    # Without the window (Kubeflow V2): Transform reads this run's ExampleGen output.
    ir = tfx_runner._make_pipeline_proto(create_pipeline(config, **kwargs, span_window=False))
    transform = next(
        n.pipeline_node for n in ir.nodes if n.pipeline_node.node_info.id == "Transform"
    )
    assert transform.inputs.inputs["examples"].channels[0].producer_node_query.id == "CsvExampleGen"


def test_a_text_folder_span_is_staged_as_train_and_eval_under_its_span(tmp_path, repo_root):
    raw = yaml.safe_load((repo_root / "configs" / "bbc_news.yaml").read_text())
    for n in (1, 2):
        for label in ("sport", "tech"):
            for i in range(6):
                path = tmp_path / "texts" / f"span-{n}" / label / f"{i}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{label} story {i} of span {n}")
    raw["data"] = {"format": "text_folder", "source": str(tmp_path / "texts"), "spans": {}}
    path = tmp_path / "texts.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path, output_root=str(tmp_path / "out"))
    staged = sources.stage_spans(config)
    assert staged.window == (1, 2) and staged.data.rows == 24
    root = Path(data.staging_directory(config))
    for n in (1, 2):
        assert {p.name for p in (root / f"span-{n}").iterdir()} >= {"train", "eval"}
    example_gen = sources.source_of(config).example_gen(config, str(root), spans.range_config(2))
    assert "split:train,num_files:" in spans.input_fingerprint(example_gen, 2)


def test_kubeflow_compiles_spans_without_the_window(tmp_path):
    """Kubeflow V2 compiles no custom resolver: the cluster trains on the newest span, which
    its ExampleGen (no range: TFX picks the latest) reads under span-{SPAN}/."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2 as pb
    from kubeflow_testlib import VERTEX, load

    from pipeline import kubeflow_runner

    _write_csv(tmp_path / "data" / "span-1" / "a.csv", _year("2007"))
    spanned = {"data": {"source": str(tmp_path / "data"), "spans": {"window": 2}}}
    config = load(tmp_path, VERTEX, spanned)
    out = tmp_path / "pipeline.json"
    kubeflow_runner.compile_from_flags(config, str(out), {})
    spec = pb.PipelineSpec()
    json_format.ParseDict(json.loads(out.read_text())["pipelineSpec"], spec)
    tasks = spec.root.dag.tasks
    assert "span_window_resolver" not in tasks
    assert tasks["Transform"].inputs.artifacts["examples"].task_output_artifact.producer_task == (
        "CsvExampleGen"
    )
    input_config = json.loads(
        tasks["CsvExampleGen"]
        .inputs.parameters["input_config"]
        .runtime_value.constant_value.string_value
    )
    assert input_config["splits"][0]["pattern"] == "span-{SPAN}/*.csv*"


def test_the_summary_line_and_the_report_section_name_each_span_and_the_drift():
    from pipeline import report

    entry = {"span": 3, "rows": {"train": 91, "eval": 29}, "uri": "x"}
    section = {
        "on_disk": [1, 2, 3],
        "window": 2,
        "ingested": [entry],
        "trained": [{**entry, "span": 2, "rows": {"train": 90, "eval": 24}}, entry],
        "evaluated": entry,
        "drift": {
            "span": 3,
            "previous_span": 2,
            "action": "warn",
            "features": {
                "island": {
                    "statistic": "L_infinity",
                    "value": 0.4,
                    "threshold": 0.25,
                    "drifted": True,
                }
            },
            "drifted_features": ["island"],
        },
    }
    assert spans.format_line(section) == (
        "  spans: ingested 3; trained on 2, 3 (window 2); evaluated on 3; span 3 vs 2: island"
    )
    page = "".join(report._spans({"spans": section}))
    assert (
        "<td>3</td><td>ingested, trained, evaluated (blessing)</td><td>91</td><td>29</td>" in page
    )
    assert "<tr class='fail'><td>island</td><td>L_infinity</td>" in page
    assert report._spans({"spans": None}) == []


def test_retrain_triggers_new_spans_and_without_spans_a_changed_file(tmp_path, repo_root):
    from pipeline import retrain

    for n, year in enumerate(("2007", "2008", "2009"), start=1):
        _write_csv(tmp_path / "data" / f"span-{n}" / "a.csv", _year(year))
    config = _config(tmp_path, repo_root, str(tmp_path / "data"), window=2)
    # Nothing ingested yet (an empty ML Metadata): the window's spans are new.
    assert retrain.new_spans(config) == (2, 3)

    # Without spans the trigger is ExampleGen's fingerprint of the staged file.
    raw = yaml.safe_load((repo_root / "configs" / "penguins.yaml").read_text())
    raw["schema_file"] = str(repo_root / "configs" / raw["schema_file"])
    raw["data"]["source"] = str(tmp_path / "one.csv")
    _write_csv(tmp_path / "one.csv", _year("2007"))
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(raw))
    plain = load_config(tmp_path / "one.yaml", output_root=str(tmp_path / "plain"))
    before = retrain.data_fingerprint(plain)
    assert retrain.data_fingerprint(plain) == before
    _write_csv(tmp_path / "one.csv", _year("2007") + _year("2008"))
    assert retrain.data_fingerprint(plain) != before
