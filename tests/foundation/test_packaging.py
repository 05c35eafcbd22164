"""Packaging: the top-level folders install as kubeballast.* and nothing else.

pyproject.toml maps core/, exporter/, remediations/ and simulator/ onto the one
``kubeballast`` namespace with package-dir. A mistake there would install bare
``core`` or ``exporter`` packages into site-packages, shadowing other projects' modules
of the same name; these tests build the real wheel and look inside.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import kubeballast.core

PACKAGE_FOLDERS = {
    "kubeballast": "kubeballast",
    "core": "kubeballast/core",
    "exporter": "kubeballast/exporter",
    "remediations": "kubeballast/remediations",
    "simulator": "kubeballast/simulator",
}


@pytest.fixture(scope="module")
def source(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of what the wheel is built from (setuptools writes build/ and *.egg-info
    next to the sources, which the repository should not get)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo_root / name, source / name)
    for folder in PACKAGE_FOLDERS:
        shutil.copytree(
            repo_root / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    return source


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        # No build isolation: setuptools and wheel come from the test extras, so the
        # build needs no index.
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [built] = out.glob("kube_ballast-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def test_a_normal_install_imports_every_layer(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    """Install the wheel (not editable) into a fresh venv and import from it.

    The new venv reaches the test venv's dependencies through a .pth line; .pth files
    are not processed in paths added that way, so the editable install's import hook
    stays out and only the wheel provides kubeballast.
    """
    assert wheel.filename is not None
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "deps.pth").write_text("\n".join(deps) + "\n")
    with zipfile.ZipFile(wheel.filename) as archive:
        archive.extractall(site)
    probe = (
        "import kubeballast, kubeballast.cli, kubeballast.core.config, "
        "kubeballast.exporter, kubeballast.remediations, kubeballast.simulator.store; "
        "print(kubeballast.core.config.__file__)"
    )
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(Path(site))


def test_every_module_is_under_kubeballast(wheel: zipfile.ZipFile) -> None:
    modules = [name for name in wheel.namelist() if name.endswith(".py")]
    assert modules
    assert [name for name in modules if not name.startswith("kubeballast/")] == []


def test_no_bare_top_level_packages(wheel: zipfile.ZipFile) -> None:
    top_level = {name.split("/")[0] for name in wheel.namelist()}
    assert top_level - {"kubeballast"} == {
        name for name in top_level if name.endswith(".dist-info")
    }
    for bare in ("core", "exporter", "remediations", "simulator"):
        assert bare not in top_level


def test_every_source_module_is_in_the_wheel(wheel: zipfile.ZipFile, source: Path) -> None:
    expected = {
        f"{target}/{path.relative_to(source / folder).as_posix()}"
        for folder, target in PACKAGE_FOLDERS.items()
        for path in (source / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert expected - set(wheel.namelist()) == set()


def test_the_wheel_is_typed_and_has_the_console_script(wheel: zipfile.ZipFile) -> None:
    assert "kubeballast/py.typed" in wheel.namelist()
    [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "kube-ballast = kubeballast.cli:main" in wheel.read(entry_points).decode()


def test_the_editable_install_resolves_to_the_repository_folders(repo_root: Path) -> None:
    assert Path(kubeballast.core.__file__).resolve() == repo_root / "core" / "__init__.py"
