"""The command line: config-driven serve/predict arguments and unknown options."""

import pytest

from pipeline import cli


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
    assert cli._serving_args(args) == [
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
    assert cli._serving_args(args)[-4:] == ["--input", "rows.csv", "--address", "h:1"]


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
