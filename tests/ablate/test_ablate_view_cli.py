"""The ablation page of `medmix view`, and the command line's refusals."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from medmix.cli.main import app


def test_view_renders_report_with_hostile_names_escaped(tmp_path):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from medmix.ablate.view import MARKER, create_app

    (tmp_path / MARKER).write_text("{}")
    (tmp_path / "report.md").write_text("# r\n\n| source | contribution |\n|---|---:|\n"
                                        "| <script>alert(1)</script> | +0.5 |\n\n![c](contributions.png)\n")
    (tmp_path / "contributions.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (tmp_path / "secret.txt").write_text("no")
    client = TestClient(create_app(tmp_path))
    page = client.get("/")
    assert page.status_code == 200 and "<table>" in page.text
    assert "<script>alert" not in page.text and "&lt;script&gt;" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert client.get("/contributions.png").content.startswith(b"\x89PNG")
    assert client.get("/predicted_vs_observed.png").status_code == 404
    assert client.get("/secret.txt").status_code == 404


def test_view_of_an_unfinished_ablation_says_how_to_resume(tmp_path):
    from medmix.ablate.view import render_page
    from medmix.core.errors import MedmixError

    with pytest.raises(MedmixError, match="resume"):
        render_page(tmp_path)


def test_cli_refuses_bad_plan_and_foreign_folder(tmp_path):
    r = CliRunner().invoke(app, ["ablate", "--recipe", "demo", "--plan", "doremi", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "--plan" in r.output
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.txt").write_text("mine")
    r = CliRunner().invoke(app, ["ablate", "--recipe", "demo", "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "not empty" in r.output


def test_resuming_with_other_settings_is_refused(tmp_path):
    from medmix.ablate.runner import AblationOptions, _claim
    from medmix.core.errors import MedmixError

    opts = AblationOptions(recipe="demo", plan="loo", proxy="proxy-tiny", tokens=10, out=tmp_path, cache=tmp_path)
    _claim(tmp_path, opts)
    assert json.loads((tmp_path / ".medmix-ablate.json").read_text())["tokens"] == 10
    _claim(tmp_path, opts)  # same settings: resumes
    opts.tokens = 20
    with pytest.raises(MedmixError, match="tokens"):
        _claim(tmp_path, opts)


def test_variant_builds_keep_every_base_source_folder(tmp_path, monkeypatch):
    """A variant without pubmedqa still decontaminates against pubmedqa:pqa_labeled, read from the
    source's `from:` folder; without it the build would try to download the split."""
    from medmix.ablate import runner

    seen = {}

    def fake_build(recipe, opts, dest):
        seen.update(opts.from_dirs)
        raise RuntimeError("stop after the first build")

    monkeypatch.setattr(runner, "_build", fake_build)
    opts = runner.AblationOptions(recipe="demo", plan="loo", proxy="proxy-tiny", tokens=10, out=tmp_path / "a",
                                  cache=tmp_path / "c", from_dirs={"slake": tmp_path / "mine"})
    with pytest.raises(RuntimeError, match="stop"):
        runner.run_ablation(opts, log=lambda m: None)
    assert seen["pubmedqa"].name == "pubmedqa" and seen["pubmedqa"].is_dir()
    assert seen["slake"] == tmp_path / "mine"  # the user's --from wins
