"""The image and the compose file, checked by tools without a Docker engine: compose.yaml against the Compose
specification's JSON schema (vendored in deploy/schemas, so this works offline), the Dockerfile with hadolint, and
the Dockerfile's COPY list against the packages pyproject.toml installs. Each check also runs on a deliberately
broken copy, which it must reject."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCHEMA = ROOT / "deploy" / "schemas" / "compose-spec.json"


def _compose_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--schemafile", str(SCHEMA), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def packages_missing_from_image(dockerfile: str, pyproject: dict) -> set[str]:
    """The packages pyproject.toml installs that the Dockerfile's build stage does not copy."""
    wanted = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.M))
    return wanted - copied


def test_compose_file_follows_the_compose_specification_and_a_broken_copy_does_not(tmp_path):
    assert _compose_check(ROOT / "compose.yaml").returncode == 0, _compose_check(ROOT / "compose.yaml").stdout
    broken = tmp_path / "compose.yaml"
    text = (ROOT / "compose.yaml").read_text()
    broken.write_text(text.replace("    restart: ", "    restrat: ", 1))  # a misspelt service key
    assert "restart: " in text
    result = _compose_check(broken)
    assert result.returncode == 1
    assert "restrat" in result.stdout


def test_dockerfile_passes_hadolint_and_a_broken_copy_does_not(tmp_path):
    clean = _hadolint(ROOT / "Dockerfile")
    assert clean.returncode == 0, clean.stdout
    broken = tmp_path / "Dockerfile"
    text = (ROOT / "Dockerfile").read_text()
    broken.write_text(text.replace("USER 10001", "USER root\nRUN cd /opt && pip install requests", 1))
    result = _hadolint(broken)
    assert result.returncode == 1
    assert "DL3002" in result.stdout  # last USER is root
    assert "DL3003" in result.stdout  # cd instead of WORKDIR


def test_image_is_multi_stage_runs_unprivileged_and_copies_every_package():
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert packages_missing_from_image(dockerfile, pyproject) == set()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.M)
    assert stages == ["build", "runtime"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim@sha256:[0-9a-f]{64}$", dockerfile, re.M)  # digest-pinned
    runtime = dockerfile.split(" AS runtime", 1)[1]
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert re.findall(r"^USER (\S+)$", runtime, re.M)[-1] == "10001"
    # A copy that drops a package (it once missed three) is caught.
    dropped = dockerfile.replace("COPY governance ./governance\n", "")
    assert packages_missing_from_image(dropped, pyproject) == {"governance"}
