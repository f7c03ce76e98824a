"""Every command group fails alike: one red line on stderr, exit status 2, a long path unbroken."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medmix.cli.common import fail, parse_from
from medmix.cli.main import app
from medmix.core.errors import MedmixError


def test_fail_keeps_a_long_path_on_one_line(capsys):
    path = "/very/long/" + "deeply-nested-folder/" * 10 + "recipe.yaml"
    with pytest.raises(typer.Exit) as exc:
        fail(MedmixError(f"{path}: cannot be read"))
    assert exc.value.exit_code == 2
    err = capsys.readouterr().err
    assert path in err and len(err.strip().splitlines()) == 1


def test_parse_from_splits_on_the_first_equals_sign():
    assert parse_from(["a=/x=y", "b=~/d"]) == {"a": Path("/x=y"), "b": Path("~/d").expanduser()}
    assert parse_from(None) == {}
    with pytest.raises(typer.BadParameter, match="SOURCE=DIR"):
        parse_from(["nodir"])


@pytest.mark.parametrize("args", [["build", "--recipe", "/nonexistent/r.yaml"],
                                  ["stats", "/nonexistent/mixture"],
                                  ["eval", "classify", "-e", "scratch", "-b", "no-such-benchmark"]])
def test_every_command_group_exits_2_with_one_error_line(args, tmp_path):
    res = CliRunner().invoke(app, args + ([] if args[0] == "stats" else ["--cache", str(tmp_path / "c")]))
    assert res.exit_code == 2, res.output
    assert "error:" in res.output


def _options(command, prefix=""):
    """(command path, option name) → help text, over the whole click tree typer builds."""
    found = {}
    for name, sub in getattr(command, "commands", {}).items():
        found |= _options(sub, f"{prefix}{name} ")
    for p in getattr(command, "params", []):
        if getattr(p, "param_type_name", None) == "option":
            found[(prefix.strip(), p.opts[0])] = p.help
    return found


def test_from_and_mirror_are_one_declaration_with_one_help():
    options = _options(typer.main.get_command(app))
    for flag in ("--from", "--mirror"):
        helps = {cmd: text for (cmd, opt), text in options.items() if opt == flag}
        assert {"build", "doctor", "eval vqa", "eval classify"} <= set(helps), helps
        assert len(set(helps.values())) == 1, helps
