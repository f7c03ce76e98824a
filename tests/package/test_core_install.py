"""A real venv holding only pyproject's core dependencies: core commands run, extra ones name their extra.

test_extras.py hides a fixed list of modules; this one derives what is *present* from
pyproject.toml instead, so a module that a core command imports but `dependencies` forgets fails
here, and so does an extra's module that the core closure drags in. Nothing is downloaded:
`python -m venv` without system site-packages, then each distribution of the core closure
(requirements followed recursively, markers evaluated) is linked in from this interpreter's
site-packages, file by file from its RECORD. medmix itself comes from the worktree on PYTHONPATH.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib
from extra_commands import EXTRA_COMMANDS
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from medmix.core.extras import COMMANDS, install_command

ROOT = Path(__file__).resolve().parents[2]


def _core_closure() -> set[str]:
    """Canonical names of the core dependencies and everything they need, as installed here."""
    todo = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo += [Requirement(r) for r in importlib.metadata.distribution(name).requires or []]
    return seen


@pytest.fixture(scope="module")
def core_python(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("core-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    here = Path(sysconfig.get_paths()["purelib"])
    closure = _core_closure()
    files: dict[str, list[str]] = {}    # top-level entry of site-packages -> the closure's files under it
    foreign: set[str] = set()           # top-level entries that other distributions also put files in
    for dist in importlib.metadata.distributions(path=[str(here)]):
        ours = canonicalize_name(dist.metadata["Name"]) in closure
        for rel in dist.files or []:
            top = rel.parts[0]
            if top == "..":  # console scripts and the like live outside site-packages
                continue
            if ours:
                files.setdefault(top, []).append(str(rel))
            else:
                foreign.add(top)
    for top, rels in files.items():
        if top not in foreign:  # one link per package folder: quick, and nothing else comes with it
            (target / top).symlink_to(here / top)
            continue
        for rel in rels:  # a folder shared with a distribution outside the closure: file by file
            dst = target / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if (here / rel).is_file() and not dst.exists():
                dst.symlink_to(here / rel)
    return python


def _medmix(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")} | {"PYTHONPATH": str(ROOT)}
    return subprocess.run([str(python), "-c", "from medmix.cli.main import app; app(prog_name='medmix')", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_venv_lacks_the_extras(core_python, tmp_path):
    res = subprocess.run([str(core_python), "-c", "import importlib.util as u; "
                          "print([m for m in ('transformers', 'safetensors', 'starlette', 'ray', 'sklearn', "
                          "'h5py', 'pyarrow', 'torch') if u.find_spec(m)])"], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]}, check=True)
    assert res.stdout.strip() == "['h5py', 'pyarrow', 'torch']"


def test_core_commands_run_in_a_core_install(core_python, tmp_path):
    for args in (["sources", "--json"], ["build", "--plan", "--recipe", "openmedq-3.35m"],
                 ["lock", "--recipe", "demo", "--offline", "--out", str(tmp_path / "demo.lock.json")]):
        res = _medmix(core_python, args, tmp_path)
        assert res.returncode == 0, (args, res.stderr[-2000:])


def test_the_demo_builds_and_publishes_in_a_core_install(core_python, tmp_path):
    """build, stats (with charts) and push --dry-run: the whole path a plain `pip install medmix` promises."""
    for args in (["build", "--out", "mix", "--cache", "cache"], ["stats", "mix", "--plot", "charts"],
                 ["push", "mix", "me/demo", "--dry-run", "upload"]):
        res = _medmix(core_python, args, tmp_path)
        assert res.returncode == 0, (args, res.stderr[-2000:])
    assert (tmp_path / "mix" / "manifest.json").is_file() and list((tmp_path / "charts").glob("*.png"))
    assert (tmp_path / "upload" / "README.md").is_file()


@pytest.mark.parametrize(("command", "args"), [c for c in EXTRA_COMMANDS if c[0] != "stats --tokenizer"])
def test_extra_commands_name_their_extra_in_a_core_install(core_python, tmp_path, command, args):
    res = _medmix(core_python, args, tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    [line] = res.stderr.strip().splitlines()
    assert line.startswith(f"error: medmix {command} needs its extra: {install_command(COMMANDS[command])} ")
