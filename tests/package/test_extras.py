"""Every command declares its extra, and without it a user gets one line naming the install command.

The end-to-end half runs the real `medmix` CLI in a subprocess whose `sitecustomize`
(tests/fixtures/without_extras) makes every extra-only module unimportable, as after a plain
`pip install medmix`: each extra-needing command must exit 2 with one `pip install "medmix[X]"`
line and no traceback, and the core commands must still work there.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import typer
from extra_commands import EXTRA_COMMANDS
from typer.testing import CliRunner

from medmix.cli.common import fail, needs_extra
from medmix.cli.main import app
from medmix.core.errors import MedmixError
from medmix.core.extras import COMMANDS, EXTRAS, MissingExtra, extra_providing, install_command, require

ROOT = Path(__file__).resolve().parents[2]
HIDER = ROOT / "tests" / "fixtures" / "without_extras"
# every module only an extra brings (fsspec is not one: datasets and huggingface_hub need it)
EXTRA_ONLY = sorted({m for modules in EXTRAS.values() for m in modules} | {"s3fs", "liger_kernel"})


def _registered(group: typer.Typer, prefix: str = "") -> dict[str, object]:
    found = {prefix + (c.name or c.callback.__name__): c.callback for c in group.registered_commands}
    for g in group.registered_groups:
        found |= _registered(g.typer_instance, f"{prefix}{g.name} ")
    return found


def test_every_registered_command_declares_its_extra_and_is_guarded():
    registered = _registered(app)
    assert set(registered) == {c for c in COMMANDS if " --" not in c}
    for name, callback in registered.items():
        assert hasattr(callback, "__wrapped__"), f"medmix {name} is registered without needs_extra"


def test_each_probed_module_comes_from_a_distribution_of_its_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    providers = importlib.metadata.packages_distributions()
    assert set(COMMANDS.values()) - {None} <= set(EXTRAS) <= set(extras)
    for extra, modules in EXTRAS.items():
        listed = {re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower().replace("_", "-") for req in extras[extra]}
        for module in modules:
            dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
            assert dists & listed, f"{module} (from {dists}) is probed for [{extra}], which lists {sorted(listed)}"


def test_fail_prints_brackets_rich_would_read_as_markup(capsys):
    with pytest.raises(typer.Exit):
        fail(MedmixError(f'medmix view needs its extra: {install_command("view")} [bold]scan[1].dcm'))
    err = capsys.readouterr().err
    assert 'pip install "medmix[view]" [bold]scan[1].dcm' in err


def test_require_names_the_extra_and_the_missing_module(monkeypatch):
    monkeypatch.setitem(EXTRAS, "view", ("starlette", "no_such_module_medmix"))
    with pytest.raises(MissingExtra, match=r'^medmix view needs its extra: pip install "medmix\[view\]" '
                                           r"\(module 'no_such_module_medmix' is not installed\)$"):
        require("view")
    require("build")  # no extra: nothing probed


def test_a_module_not_found_inside_a_command_becomes_the_same_line(capsys):
    @needs_extra("sources")
    def deep() -> None:
        raise ModuleNotFoundError("No module named 'starlette.routing'", name="starlette.routing")

    with pytest.raises(typer.Exit) as exc:
        deep()
    assert exc.value.exit_code == 2
    assert 'medmix sources needs its extra: pip install "medmix[view]"' in capsys.readouterr().err
    assert extra_providing("numpy") is None


def test_a_module_no_extra_provides_keeps_its_traceback():
    @needs_extra("sources")
    def broken() -> None:
        raise ModuleNotFoundError("No module named 'medmix.gone'", name="medmix.gone")

    with pytest.raises(ModuleNotFoundError):
        broken()


def test_a_medmix_error_a_command_lets_through_fails_like_every_command(tmp_path):
    res = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "none.yaml"), "--data", str(tmp_path),
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "is neither a preset" in res.output and res.exception is not None
    assert isinstance(res.exception, SystemExit)


def _medmix_without_extras(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDMIX_HIDE": ",".join(EXTRA_ONLY),
           "PYTHONPATH": os.pathsep.join([str(HIDER), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", "from medmix.cli.main import app; app(prog_name='medmix')", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("command", "args"), EXTRA_COMMANDS)
def test_without_its_extra_a_command_prints_one_install_line(command, args, tmp_path):
    res = _medmix_without_extras(args, tmp_path)
    extra = COMMANDS[command]
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert lines == [f"error: medmix {command} needs its extra: {install_command(extra)} "
                     f"(module {EXTRAS[extra][0]!r} is not installed)"], res.stderr


def test_core_commands_run_without_any_extra(tmp_path):
    """The hider is real: `sources` and a `--plan` build import nothing extra, and they succeed."""
    assert _medmix_without_extras(["sources", "--json"], tmp_path).returncode == 0
    res = _medmix_without_extras(["build", "--plan"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "expected total" in res.stdout
    probe = _medmix_without_extras(["--help"], tmp_path)
    assert probe.returncode == 0
    hidden = subprocess.run([sys.executable, "-c", "import safetensors"], capture_output=True, text=True,
                            env={**os.environ, "MEDMIX_HIDE": "safetensors", "PYTHONPATH": str(HIDER)})
    assert "No module named 'safetensors'" in hidden.stderr


def test_python_m_trainer_without_the_train_extra_prints_one_line(tmp_path):
    env = {**os.environ, "MEDMIX_HIDE": ",".join(EXTRA_ONLY),
           "PYTHONPATH": os.pathsep.join([str(HIDER), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "trainer", "--data", "mix", "--out", "run"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"error: medmix train needs its extra: {install_command('train')} "
                                               "(module 'transformers' is not installed)"]


def test_the_install_page_lists_every_command_with_its_extra():
    rows = re.findall(r"^\| `medmix ([^`]+)` \| (?:`(\w+)`|—) \|$", (ROOT / "docs" / "extras.md").read_text(), re.M)
    assert {command: extra or None for command, extra in rows} == COMMANDS
