"""The image recipe: no docker here, so check that it installs the lock and the packages."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instructions() -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_installs_the_locked_stack():
    runs = " ".join(i for i in _instructions() if i.startswith("RUN"))
    assert "pip install --no-cache-dir -c requirements.lock -r requirements.in" in runs
    assert "pip install --no-cache-dir --no-deps -r requirements-nodeps.txt" in runs
    copies = [i for i in _instructions() if i.startswith("COPY requirements")]
    assert copies == ["COPY requirements.in requirements.lock requirements-nodeps.txt ./"]
    assert "FROM debian:trixie" in DOCKERFILE
    for package in (
        "python3",
        "python3-venv",
        "python3-dev",
        "gcc",
        "g++",
        "ca-certificates",
        "make",
        "git",
    ):
        assert f" {package} " in runs


def test_lock_pins_the_stack_the_pipeline_needs():
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for name in (
        "tfx",
        "kfp",
        "kfp-pipeline-spec",
        "google-cloud-aiplatform",
        "apache-beam",
        "tensorflow",
    ):
        assert name in pins, name
    beam = pins["apache-beam"]
    assert f"apache/beam_python3.13_sdk:{beam}" in DOCKERFILE


def test_copies_and_installs_every_project_package():
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    copied = {m.group(1) for m in re.finditer(r"^COPY (\w+)/ \1/$", DOCKERFILE, re.M)}
    assert {p.rstrip("*") for p in packages} <= copied
    assert "pip install --no-cache-dir --no-deps ." in DOCKERFILE
    assert "--no-deps -e" not in DOCKERFILE


def test_keras_2_and_build_context():
    assert "TF_USE_LEGACY_KERAS=1" in DOCKERFILE
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "output/" in ignored and ".git/" in ignored
