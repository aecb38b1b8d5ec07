"""The command line: config-driven serve/predict arguments, unknown options, and what a run
shows on the terminal."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_local_runner import malformed_csv, write_config

from pipeline import cli
from pipeline.config import load_config


def _args(argv):
    parser = cli.parser()
    args, extra = parser.parse_known_args(argv)
    args.extra = [a for a in extra if a != "--"]
    return args


def test_serve_takes_name_and_path_from_the_config_and_passes_other_options_on(repo_root):
    args = _args(
        [
            "serve",
            "--config",
            str(repo_root / "configs/penguins.yaml"),
            "--enable-batching",
            "--grpc-port",
            "9000",
        ]
    )
    assert cli._serving_args(args, load_config(args.config)) == [
        "serve",
        "--model-name",
        "penguins",
        "--model-base-path",
        str(repo_root / "output" / "serving" / "penguins"),
        "--enable-batching",
        "--grpc-port",
        "9000",
    ]


def test_predict_passes_the_address_on(repo_root):
    args = _args(
        [
            "predict",
            "--config",
            str(repo_root / "configs/penguins.yaml"),
            "--input",
            "rows.csv",
            "--",
            "--address",
            "h:1",
        ]
    )
    assert cli._serving_args(args, load_config(args.config))[-4:] == [
        "--input",
        "rows.csv",
        "--address",
        "h:1",
    ]


def test_predict_names_the_image_feature_of_an_image_config(repo_root):
    config = str(repo_root / "configs/fashion_mnist.yaml")
    args = _args(["predict", "--config", config, "--input", "shirts/", "--", "--address", "h:1"])
    assert cli._serving_args(args, load_config(args.config)) == [
        "predict",
        "--model-name",
        "fashion_mnist",
        "--input",
        "shirts/",
        "--image-feature",
        "image",
        "--address",
        "h:1",
    ]


def test_explain_points_at_the_configs_pushed_model(repo_root):
    config = str(repo_root / "configs/fashion_mnist.yaml")
    args = _args(["explain", "--config", config, "--input", "shirt.png", "--", "--row", "0"])
    loaded = load_config(args.config)
    assert cli._serving_args(args, loaded) == [
        "explain",
        "--model-dir",
        f"{loaded.serving_root}/fashion_mnist",
        "--input",
        "shirt.png",
        "--image-feature",
        "image",
        "--row",
        "0",
    ]


def test_unknown_options_of_other_commands_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--bogus"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_config_errors_exit_2_with_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: ranking\n")
    assert cli.main(["run", "--config", str(bad)]) == 2
    assert "task: expected one of" in capsys.readouterr().err


def test_a_failed_run_prints_one_line_and_tensorflow_start_up_lines_go_to_the_log(
    tmp_path, repo_root
):
    config = write_config(tmp_path, repo_root, source=malformed_csv(tmp_path))
    root = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)]
        + ["--output-root", str(root)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    summary = json.loads((root / "penguins" / "summary.json").read_text())
    assert json.loads((root / "summary.json").read_text()) == summary
    assert summary["status"] == "failed" and "line 5" in summary["error"]
    assert proc.stderr.splitlines() == [
        f"run {summary['run_id']} of penguins failed: {summary['error']}"
        f" (log: {summary['log_file']})"
    ]
    terminal = (proc.stdout + proc.stderr).lower()
    log = Path(summary["log_file"]).read_text().lower()
    assert "onednn" in log or "cuda" in log
    for start_up in ("onednn", "cuda", "cuinit"):
        assert start_up not in terminal


def test_schema_on_a_bad_file_prints_one_line(tmp_path, capsys, repo_root):
    raw = yaml.safe_load((repo_root / "configs" / "penguins.yaml").read_text())
    (tmp_path / "p.csv").write_text("species,island\nAdelie,Biscoe\n")
    raw.update(schema_file=None, data={"source": "p.csv"})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    code = cli.main(["schema", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "s")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"data error: {tmp_path / 'p.csv'}: features.numeric names")
    assert err.count("\n") == 1


def test_predict_without_a_server_is_one_line(tmp_path, repo_root):
    """TensorFlow's start-up lines go to a log: the terminal shows only the answer."""
    rows = tmp_path / "rows.csv"
    rows.write_text("island,bill_length_mm\nBiscoe,40\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "predict",
            "--config",
            str(repo_root / "configs" / "penguins.yaml"),
            "--output-root",
            str(tmp_path),
            "--input",
            str(rows),
            "--",
            "--address",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        cwd=repo_root,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("predict: no model server answered at 127.0.0.1:1")
    assert result.stderr.count("\n") == 1, result.stderr
    [log] = (tmp_path / "logs").glob("penguins-predict-*.log")
    assert "oneDNN" in log.read_text() or "cuda" in log.read_text()


def test_predict_names_the_text_feature_and_the_series_feature_and_length(repo_root):
    text = _args(["predict", "--config", str(repo_root / "configs/bbc_news.yaml"), "--input", "a/"])
    assert cli._serving_args(text, load_config(text.config))[-2:] == ["--text-feature", "text"]
    series = _args(
        ["predict", "--config", str(repo_root / "configs/forda.yaml"), "--input", "s.tsv"]
    )
    assert cli._serving_args(series, load_config(series.config))[-4:] == [
        "--sequence-feature",
        "signal",
        "--sequence-length",
        "500",
    ]


def test_predict_reads_series_with_or_without_a_label_and_names_a_bad_line(tmp_path):
    from serving.cli import read_series

    path = tmp_path / "s.tsv"
    path.write_text("1\t0.5\t0.25\n0.1\t0.2\n")
    assert read_series(str(path), 2) == (["1", ""], [[0.5, 0.25], [0.1, 0.2]])
    path.write_text("0.1\t0.2\n0.1\t0.2\t0.3\t0.4\n")
    with pytest.raises(ValueError, match=r"s.tsv:2: 4 fields; a series has 2 values"):
        read_series(str(path), 2)
    path.write_text("0.1\t0.2\n1\t0.3\tnan\n")
    with pytest.raises(ValueError, match=r"s.tsv:2: a value is NaN or infinite"):
        read_series(str(path), 2)
