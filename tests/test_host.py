"""pipeline/host.py: inputs found through the host root, output roots outside the shared paths."""

from pathlib import Path

import pytest

from pipeline.host import check_output_root, resolve_input, shared_paths

# Absolute paths that exist on no machine these tests run on; only under a fake host root.
NOWHERE = Path("/tfxp-test-nowhere")


@pytest.fixture
def host_root(tmp_path, monkeypatch) -> Path:
    """A fake host `/` at tmp_path/host, announced as the environment's host root."""
    root = tmp_path / "host"
    root.mkdir()
    monkeypatch.setenv("TFXP_HOST_ROOT", str(root))
    return root


@pytest.fixture
def shared(tmp_path, monkeypatch) -> Path:
    """One shared directory, tmp_path/shared; $HOME is tmp_path/home."""
    directory = tmp_path / "shared"
    directory.mkdir()
    monkeypatch.setenv("TFXP_SHARED_PATHS", str(directory))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return directory


def test_visible_input_is_returned_as_is(tmp_path, host_root):
    data = tmp_path / "sales.csv"
    data.write_text("a,b\n1,2\n")
    assert resolve_input(data) == data


def test_input_only_on_the_host_is_read_through_the_host_root(host_root):
    on_host = host_root / NOWHERE.relative_to("/") / "sales.csv"
    on_host.parent.mkdir(parents=True)
    on_host.write_text("a,b\n1,2\n")
    assert resolve_input(NOWHERE / "sales.csv") == on_host
    assert resolve_input(NOWHERE / "sales.csv").read_text() == "a,b\n1,2\n"


def test_host_symlinks_are_followed_inside_the_host_root(host_root):
    # /tfxp-test-nowhere/home/data -> /tfxp-test-nowhere/srv/datasets (absolute, as on the host),
    # and a relative one beside it: both must land in the host root, not the environment's /.
    base = host_root / NOWHERE.relative_to("/")
    datasets = base / "srv" / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "sales.csv").write_text("x\n")
    (base / "home").mkdir()
    (base / "home" / "data").symlink_to(NOWHERE / "srv" / "datasets")
    (base / "home" / "relative").symlink_to("../srv/datasets")
    assert resolve_input(NOWHERE / "home/data/sales.csv") == datasets / "sales.csv"
    assert resolve_input(NOWHERE / "home/relative/sales.csv") == datasets / "sales.csv"


def test_input_missing_everywhere_names_both_places(host_root):
    with pytest.raises(FileNotFoundError) as raised:
        resolve_input(NOWHERE / "sales.csv")
    message = str(raised.value)
    assert (
        "/tfxp-test-nowhere/sales.csv does not exist, neither in the environment nor on the host"
        in message
    )
    assert str(host_root / "tfxp-test-nowhere" / "sales.csv") in message


def test_input_missing_without_a_host_root_does_not_mention_one(monkeypatch):
    monkeypatch.delenv("TFXP_HOST_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="sales.csv does not exist") as raised:
        resolve_input(NOWHERE / "sales.csv")
    assert "host" not in str(raised.value)


def test_every_output_root_is_fine_when_everything_is_shared(monkeypatch):
    monkeypatch.delenv("TFXP_SHARED_PATHS", raising=False)
    assert shared_paths() is None
    check_output_root(Path("/"))
    check_output_root(NOWHERE / "output")


def test_output_roots_under_shared_paths_are_accepted(shared, tmp_path, repo_root):
    check_output_root(shared / "output")
    check_output_root(shared)
    check_output_root(tmp_path / "home" / "runs" / "output")  # $HOME
    check_output_root(repo_root / "output")
    check_output_root(Path("/tmp/tfxp-output"))


def test_output_root_outside_shared_paths_is_refused(shared):
    with pytest.raises(ValueError) as raised:
        check_output_root(NOWHERE / "output")
    message = str(raised.value)
    assert message.startswith(
        "/tfxp-test-nowhere/output is outside the directories the environment shares with the host ("
    )
    assert str(shared) in message and "/tmp" in message
    assert "choose a directory under one of them" in message


def test_root_is_refused(shared):
    with pytest.raises(ValueError, match="^/ is outside"):
        check_output_root(Path("/"))


def test_a_path_sharing_only_a_name_prefix_is_refused(monkeypatch):
    monkeypatch.setenv("TFXP_SHARED_PATHS", str(NOWHERE))
    check_output_root(NOWHERE / "output")
    with pytest.raises(ValueError, match="^/tfxp-test-nowhere-other/output is outside"):
        check_output_root(Path("/tfxp-test-nowhere-other/output"))


def test_output_root_escaping_through_a_symlink_is_refused(shared):
    (shared / "out").symlink_to(NOWHERE)
    with pytest.raises(ValueError, match=r"shared/out/run \(/tfxp-test-nowhere/run\) is outside"):
        check_output_root(shared / "out" / "run")


def test_shared_paths_read_the_environment_at_call_time(shared, monkeypatch, tmp_path):
    assert shared.resolve() in shared_paths()
    monkeypatch.setenv("TFXP_SHARED_PATHS", str(NOWHERE))
    assert shared.resolve() not in shared_paths()
    assert NOWHERE in shared_paths()
    check_output_root(NOWHERE / "output")
