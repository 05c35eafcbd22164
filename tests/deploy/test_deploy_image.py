"""The Dockerfile builds what the manifests run, without a Docker engine to try it.

No engine runs on the development machine or in CI, so the Dockerfile's logic is
checked in parts: its structure (pinned base images, never ``latest``; a numeric
non-root user in the final stage; exec-form instructions, no shell; COPY of only the
package's sources, which .dockerignore alone lets into the context; an install from the
built wheels with no index), and the one step that could really fail, building the
wheel from exactly what the Dockerfile copies.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_manifests import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    result: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(DOCKERFILE.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, arguments = text.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip(), start))
    assert not pending, "Dockerfile ends inside a continuation"
    return result


def stages() -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def build_args() -> dict[str, str]:
    args = {}
    for instruction in instructions():
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
    return args


def pyproject() -> dict[str, object]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def package_folders() -> set[str]:
    tool = pyproject()["tool"]
    assert isinstance(tool, dict)
    return set(tool["setuptools"]["package-dir"].values())


def copied_sources() -> list[str]:
    """What the build stage copies from the context."""
    sources: list[str] = []
    for instruction in stages()[0]:
        if instruction.keyword == "COPY":
            *from_context, _destination = instruction.arguments.split()
            assert not any(s.startswith("--") for s in from_context), instruction
            sources.extend(s.rstrip("/") for s in from_context)
    return sources


def test_deploy_image_bases_are_pinned() -> None:
    args = build_args()
    for instruction in instructions():
        if instruction.keyword != "FROM":
            continue
        image = instruction.arguments.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image)
        name, _, tag = image.rpartition(":")
        assert name, f"line {instruction.line}: {image} has no tag"
        assert tag, f"line {instruction.line}: {image} has no tag"
        assert "/" not in tag, f"line {instruction.line}: {image} has no tag"
        assert tag != "latest", f"line {instruction.line}: {image}"
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")


def test_deploy_image_runs_as_a_numeric_non_root_user() -> None:
    final = stages()[-1]
    users = [i for i in final if i.keyword == "USER"]
    assert users, "the final stage sets no USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1].arguments)
    assert match, f"USER {users[-1].arguments} is not numeric (runAsNonRoot cannot check it)"
    assert int(match[1]) != 0
    assert match[2] is None or int(match[2]) != 0
    # Nothing after USER may need root.
    after = final[final.index(users[-1]) + 1 :]
    assert {i.keyword for i in after} <= {"EXPOSE", "ENTRYPOINT", "CMD", "LABEL", "ENV"}


def test_deploy_image_uses_exec_form_only() -> None:
    """No shell tricks: RUN, ENTRYPOINT and CMD are JSON arrays (no `sh -c`, no `&&`)."""
    for instruction in instructions():
        if instruction.keyword not in ("RUN", "ENTRYPOINT", "CMD"):
            continue
        text = instruction.arguments
        while text.startswith("--"):
            _, _, text = text.partition(" ")
            text = text.strip()
        parsed = json.loads(text)
        assert isinstance(parsed, list)
        assert all(isinstance(p, str) for p in parsed)
        assert parsed[0] not in ("sh", "/bin/sh", "bash", "/bin/bash"), instruction
    entrypoint = [i for i in stages()[-1] if i.keyword == "ENTRYPOINT"]
    scripts = pyproject()["project"]["scripts"]  # type: ignore[index]
    assert json.loads(entrypoint[-1].arguments) == ["kube-ballast"]
    assert "kube-ballast" in scripts


def test_deploy_image_copies_only_the_package_sources() -> None:
    needed = {"pyproject.toml", "README.md"} | package_folders()
    sources = copied_sources()
    assert len(sources) == len(set(sources))
    assert set(sources) == needed
    # The final stage copies nothing from the context: only from the other stages.
    for instruction in stages()[-1]:
        if instruction.keyword in ("COPY", "ADD"):
            assert instruction.keyword == "COPY"
            assert instruction.arguments.startswith("--from="), instruction
    # .dockerignore lets exactly those into the build context.
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert included == needed


def test_deploy_image_installs_the_wheels_without_an_index() -> None:
    runs = [i for i in stages()[-1] if i.keyword == "RUN"]
    assert len(runs) == 1
    text = runs[0].arguments
    assert "--mount=type=bind,from=build" in text
    command = json.loads(text[text.index("[") :])
    assert command[:4] == ["python", "-m", "pip", "install"]
    assert "--no-index" in command
    assert "--find-links" in command
    assert command[-1] == "kube-ballast"
    build_runs = [i for i in stages()[0] if i.keyword == "RUN"]
    assert [json.loads(r.arguments)[:4] for r in build_runs] == [["python", "-m", "pip", "wheel"]]


@pytest.fixture(scope="module")
def context_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel built, as the Dockerfile's build stage would, from only what it copies
    (caches left out, as .dockerignore leaves them). Build isolation is off so that no
    index is needed: setuptools and wheel come from the test extras."""
    context = tmp_path_factory.mktemp("context")
    for source in copied_sources():
        path = REPO_ROOT / source
        if path.is_dir():
            shutil.copytree(
                path, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy(path, context / source)
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"),
            *("-w", str(out), str(context)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [wheel] = out.glob("kube_ballast-*.whl")
    return zipfile.ZipFile(wheel)


def test_deploy_image_wheel_builds_from_the_copied_sources(
    context_wheel: zipfile.ZipFile,
) -> None:
    names = set(context_wheel.namelist())
    tool = pyproject()["tool"]
    assert isinstance(tool, dict)
    for package in tool["setuptools"]["packages"]:
        init = package.replace(".", "/") + "/__init__.py"
        assert init in names, f"{init} missing from the wheel"
    [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = context_wheel.read(metadata).decode()
    requires = {
        re.split(r"[ ;<>=!~\[]", line.split(": ", 1)[1])[0].lower()
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    }
    dependencies = pyproject()["project"]["dependencies"]  # type: ignore[index]
    assert requires == {re.split(r"[ ;<>=!~\[]", d)[0].lower() for d in dependencies}
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "kube-ballast = kubeballast.cli:main" in context_wheel.read(entry_points).decode()
    # Tests, docs and the deployment are not in the image.
    assert not [n for n in names if n.startswith(("tests/", "docs/", "deploy/"))]


def test_deploy_image_etcdctl_matches_the_supported_etcd() -> None:
    """`kube-ballast etcd backup` verifies snapshots with etcdctl from etcd's release
    image, pinned to a 3.5 release (kubeadm's etcd since Kubernetes 1.22)."""
    image = build_args()["ETCD_IMAGE"]
    assert re.fullmatch(r"gcr\.io/etcd-development/etcd:v3\.5\.\d+", image), image
    final = stages()[-1]
    copies = [i.arguments for i in final if i.keyword == "COPY"]
    assert "--from=etcd /usr/local/bin/etcdctl /usr/local/bin/etcdctl" in copies


def test_deploy_image_documented_build_command_matches() -> None:
    docs = Path(REPO_ROOT / "docs" / "deploy.md").read_text()
    assert "docker build -t" in docs
    assert "kustomize edit set image kube-ballast=" in docs
