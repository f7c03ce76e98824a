"""`medmix sources` as a newcomer meets it: readable at 80 columns, and honest about which formats met real bytes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from medmix.cli.common import out_console
from medmix.cli.main import app
from medmix.publish.datasets_md import summary_table
from medmix.sources import registry
from medmix.sources.base import short_upstream


def _table_at(width: int, monkeypatch) -> str:
    monkeypatch.setattr(out_console, "width", width)
    res = CliRunner().invoke(app, ["sources"])
    assert res.exit_code == 0, res.output
    return res.stdout


def _rows(text: str) -> dict[str, list[str]]:
    """Table body lines grouped by source: a row starts where the first cell holds a name."""
    rows: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if not line.startswith("│"):
            current = None if line.startswith(("└", "┡", "┏", "┃")) else current
            continue
        first = line.split("│")[1].strip()
        if first:
            current = first
            rows[current] = []
        if current:
            rows[current].append(line)
    return rows


def test_table_at_80_columns_keeps_every_row_short_and_shows_host_and_file(monkeypatch):
    text = _table_at(80, monkeypatch)
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = _rows(text)
    assert set(registry()) == set(rows)
    tallest = max(rows.items(), key=lambda kv: len(kv[1]))
    assert len(tallest[1]) <= 4, "\n".join(tallest[1])
    assert "https://" not in text and "hf://" not in text  # full URLs are for --json
    bloodmnist = "\n".join(rows["bloodmnist"])
    assert "zenodo.org" in bloodmnist and "bloodmnist.npz" in bloodmnist
    slake = "\n".join(rows["slake"])
    assert "hf.co" in slake and "train.json +3" in slake and "real bytes" in slake
    assert "docs only" in "\n".join(rows["pathvqa"]) and "n/a" in "\n".join(rows["local"])


def test_table_lists_the_provenance_of_verified_sources(monkeypatch):
    text = _table_at(80, monkeypatch)
    assert "slake: xiaoman-zhang/PMC-VQA@97358cdbc05f" in text
    assert "arch: GeorgeBatch/arch-pre-training@9fc5d0427b4e" in text
    assert "pathvqa:" not in text.split("real upstream bytes", 1)[1]


def test_wide_table_adds_domain_and_tasks(monkeypatch):
    text = _table_at(160, monkeypatch)
    assert "domain · tasks" in text and "pathology · caption" in text


def test_json_carries_full_urls_and_full_provenance():
    res = CliRunner().invoke(app, ["sources", "--json"])
    by_name = {d["name"]: d for d in json.loads(res.stdout)}
    slake = by_name["slake"]
    assert slake["format"] == "real bytes"
    assert slake["upstream"][0] == ("hf://datasets/BoKelvin/SLAKE@a9083ce6c34ac3ffb17671a605962924d8a8f9e9/"
                                    "train.json")
    (rb,) = slake["real_bytes"]
    assert rb == {"repo": "xiaoman-zhang/PMC-VQA", "commit": "97358cdbc05fdd6bf3483083511b7d0985c52360",
                  "paths": ["Slake1.0/train.json", "Slake1.0/validate.json", "Slake1.0/test.json"],
                  "note": rb["note"], "url": "https://github.com/xiaoman-zhang/PMC-VQA/tree/"
                                              "97358cdbc05fdd6bf3483083511b7d0985c52360",
                  "citation": "xiaoman-zhang/PMC-VQA@97358cdbc05fdd6bf3483083511b7d0985c52360:Slake1.0/train.json, "
                              "Slake1.0/validate.json, Slake1.0/test.json"}
    assert len(by_name["vqa_med_2019"]["real_bytes"]) == 2
    assert by_name["bloodmnist"]["upstream"] == ["https://zenodo.org/records/10519652/files/bloodmnist.npz?download=1"]
    assert by_name["pathvqa"]["format"] == "documentation only"
    assert by_name["pathvqa"]["real_bytes"] == []
    assert by_name["local"]["format"] == "not applicable"


@pytest.mark.parametrize("upstream,cell", [
    ("https://zenodo.org/records/10519652/files/bloodmnist.npz?download=1", "zenodo.org\nbloodmnist.npz"),
    ("hf://datasets/BoKelvin/SLAKE@a9083ce6c34ac3ffb17671a605962924d8a8f9e9/train.json", "hf.co\ntrain.json"),
    ("hf://datasets/flaviagiammarino/path-vqa@main/data/train-00000-of-00007-f2d0e9ef9f022d38.parquet",
     "hf.co\ntrain-00000-…022d38.parquet"),
    ("manual: quilt_1M_lookup.csv", "manual: quilt_1M_lookup.csv"),
    ("https://example.org/", "example.org"),
])
def test_short_upstream_is_host_and_file(upstream, cell):
    assert short_upstream(upstream) == cell


def test_datasets_summary_has_the_format_column():
    table = summary_table()
    header = table.splitlines()[0]
    assert header.endswith("| evaluation | format |")
    slake = next(line for line in table.splitlines() if line.startswith("| `slake`"))
    assert slake.endswith("| real bytes: [xiaoman-zhang/PMC-VQA@97358cd](https://github.com/xiaoman-zhang/PMC-VQA/"
                          "tree/97358cdbc05fdd6bf3483083511b7d0985c52360) |")
    pathvqa = next(line for line in table.splitlines() if line.startswith("| `pathvqa`"))
    assert pathvqa.endswith("| documentation only |")
