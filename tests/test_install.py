"""A non-editable install works from anywhere: the wheel carries the presets and the CLI inside
lltrace's namespace, and adds no top-level package but `lltrace` (issue #13)."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_package_list_names_every_package_in_the_tree():
    """pyproject lists the packages by hand (find_packages does not follow the commands
    symlink): a new subpackage left out of the list would be missing from the wheel."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(Path(d).relative_to(REPO).parts)
             for d, _, files in os.walk(REPO / "lltrace", followlinks=True) if "__init__.py" in files}
    assert found == listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Without build isolation where setuptools is importable: no download, and CI's venv has it
    # from `pip install -e .`'s build requirements only inside isolation, so fall back to it.
    try:
        import setuptools  # noqa: F401
        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
                    "-w", str(out), str(REPO)], check=True, capture_output=True, timeout=600)
    (whl,) = out.glob("lltrace-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_has_one_top_level_package_and_the_presets(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"lltrace"}
    assert "lltrace/configs/ultra.yaml" in names
    assert "lltrace/configs/models/tiny.yaml" in names
    assert "lltrace/commands/cli.py" in names
    assert "lltrace/ui/app.tcss" in names


@pytest.mark.slow
def test_installed_wheel_runs_from_an_empty_directory(wheel, tmp_path):
    """What `pip install .` / `pipx install .` give a user: presets found, a tiny run written
    under the working directory, nothing read from the checkout."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    bindir = env_dir / "bin"
    py = bindir / "python"
    # The fresh venv borrows this one's dependencies (torch, textual, ...) through a .pth path
    # line. That adds the directory only: this venv's editable-install hook (.pth files in it)
    # is not run, so `lltrace` can come from the wheel alone.
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLTRACE_")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"

    def lltrace(*args):
        return subprocess.run([str(bindir / "lltrace"), *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)

    where = subprocess.run([str(py), "-c", "import lltrace; print(lltrace.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert str(env_dir) in where, where
    presets = lltrace("presets")
    assert presets.returncode == 0, presets.stderr
    assert "ultra" in presets.stdout and "baseline" in presets.stdout
    run = lltrace("run", "-p", "ultra", "--headless", "--frames", "9", "--profile-blocks", "none",
                  "--no-doctor", "-o", "out")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (work / "out" / "meta.json").is_file()
    assert (work / "out" / "summary.json").is_file()
