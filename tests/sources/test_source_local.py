"""The local-folder source: work units sized by bytes, and a build whose bytes ignore where units fall."""

from __future__ import annotations

import functools
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmix.pipeline import BuildOptions, build
from medmix.recipe import parse_recipe
from medmix.sources import local
from medmix.sources._common import cut_by_weight
from medmix.sources.local import LocalFolder


def test_cut_by_weight_balances_bytes_and_keeps_order():
    weights = [1_000] * 100 + [50_000] * 10  # ten large files at the end
    cuts = cut_by_weight(weights, target=10**9, min_units=8, min_items=4)
    assert len(cuts) == 8
    assert cuts[0][0] == 0 and cuts[-1][1] == len(weights)
    assert all(a < b and b == c for (a, b), (c, _) in itertools.pairwise(cuts))  # contiguous, in order
    loads = [sum(weights[a:b]) for a, b in cuts]
    assert max(loads) <= 2 * sum(weights) / 8  # no unit near a count-based cut's 100-file lump
    assert cuts[-1][1] - cuts[-1][0] <= 3  # the big files are spread, not lumped in one unit


@pytest.mark.parametrize(("weights", "kwargs", "expected"), [
    ([], {}, [(0, 0)]),                                       # an empty folder is one (empty) unit
    ([5] * 10, {"min_items": 32}, [(0, 10)]),                 # too few files to be worth cutting
    ([10] * 64, {"min_units": 8, "min_items": 8}, [(i * 8, i * 8 + 8) for i in range(8)]),
    ([100] * 10, {"target": 300, "min_units": 1}, [(0, 3), (3, 5), (5, 8), (8, 10)]),  # by bytes
])
def test_cut_by_weight_edges(weights, kwargs, expected):
    assert cut_by_weight(weights, **kwargs) == expected


def _png(rng: np.random.Generator, side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """80 images of very different sizes, an exact duplicate, a corrupt file, a metadata row for a
    file that is not there, and an image without a metadata row: every per-unit and per-folder path."""
    root = tmp_path_factory.mktemp("local")
    rng = np.random.default_rng(0)
    rows = ["file_name,answer"]
    for i in range(80):
        sub = root / ("a" if i % 3 else "b")
        sub.mkdir(exist_ok=True)
        (sub / f"img_{i:03d}.png").write_bytes(_png(rng, 8 + (i * 37) % 90))
        rows.append(f"{sub.name}/img_{i:03d}.png,finding {i}")
    (root / "a" / "copy.png").write_bytes((root / "a" / "img_001.png").read_bytes())
    rows.append("a/copy.png,finding 1")
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rows.append("a/broken.png,broken")
    rows.append("a/gone.png,never there")
    (root / "b" / "unlisted.png").write_bytes(_png(rng, 12))
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def _units(root: Path) -> list:
    return LocalFolder(domain="radiology", license="CC0-1.0").units("train", {".": root})


def test_units_name_their_files_once_and_in_order(folder):
    units = _units(folder)
    names = [n for u in units for n in u.args["files"]]
    assert names == sorted(names) and len(names) == len(set(names)) == 83
    assert [u.part for u in units] == [str(i) for i in range(len(units))]


def _build(folder: Path, tmp: Path, name: str, workers: int = 1) -> tuple[Path, dict]:
    recipe = parse_recipe(f"""name: local-units
sources:
  mine:
    adapter: local
    from: {folder}
    options: {{domain: radiology, license: CC0-1.0}}
""", str(tmp / "r.yaml"))
    out = tmp / name
    manifest = build(recipe, BuildOptions(out=out, cache=tmp / f"cache-{name}", workers=workers), log=lambda m: None)
    manifest.pop("build_info")
    return out, manifest


def _files(out: Path) -> dict[str, bytes]:
    """Every output file but manifest.json (compared without its build_info)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p.name != "manifest.json"}


def test_output_is_byte_identical_whatever_the_unit_size(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(local, "cut_by_weight", functools.partial(cut_by_weight, min_units=1))
    assert len(_units(folder)) == 1
    one, m_one = _build(folder, tmp_path, "one-unit")
    monkeypatch.setattr(local, "cut_by_weight", functools.partial(cut_by_weight, min_units=11, min_items=2))
    assert len(_units(folder)) == 11
    many, m_many = _build(folder, tmp_path, "eleven-units", workers=2)
    assert m_many == m_one
    counts = m_one["sources"]["mine"]["counts"]
    assert counts["read"] == 84 and counts["quarantined"] == 3, counts  # broken, gone, unlisted
    assert m_one["removed"]["rows"] == 1  # the exact copy
    files = _files(one)
    assert {"quarantine.parquet", "removed.parquet"} < set(files) and any(f.startswith("data/") for f in files)
    assert _files(many) == files


def _read_all(root: Path) -> list:
    source = LocalFolder(domain="radiology", license="CC0-1.0")
    return [item for unit in source.units("train", {".": root}) for item in source.read(unit, {".": root})]


def test_bad_metadata_lines_are_named_and_the_good_rows_kept(tmp_path):
    """Metadata is parsed from the bytes read once per unit (and cached by them): a non-UTF-8 CSV,
    a malformed JSONL line and rows without file_name each become a named Bad row."""
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(_png(rng, 10))
    (tmp_path / "metadata.csv").write_bytes(b"file_name,answer\na.png,fine\n,no name\nb.png,caf\xe9\n")
    (tmp_path / "metadata.jsonl").write_bytes(b'{"file_name": "c.png", "answer": "ok"}\n{not json\n\xff\n[1]\n')
    items = _read_all(tmp_path)
    bad = sorted((b.reason, b.file) for b in items if isinstance(b, local.Bad))
    assert ("malformed JSON line: metadata.jsonl line 2: Expecting property name enclosed in double quotes",
            "metadata.jsonl") in bad
    assert ("malformed text: metadata.jsonl line 3 is not UTF-8", "metadata.jsonl") in bad
    assert ("metadata row without file_name (line 4)", "metadata.jsonl") in bad
    assert any(reason.startswith("malformed text: metadata.csv is not UTF-8") and file == "metadata.csv"
               for reason, file in bad)
    answers = {r.native_id: r.answer for r in items if isinstance(r, local.Record)}
    assert answers == {"c.png": "ok"}  # the other file's good row
    # a CSV that does not decode is refused whole (it is decoded in 8 KB chunks): its images are
    # quarantined by name, not silently dropped
    assert {b.native_id for b in items if isinstance(b, local.Bad) and b.reason.startswith("no metadata row")} == \
        {"a.png", "b.png"}


def test_metadata_cache_follows_the_bytes(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(np.random.default_rng(2), 10))
    meta = tmp_path / "metadata.csv"
    meta.write_text("file_name,answer\na.png,first\n")
    assert [r.answer for r in _read_all(tmp_path) if isinstance(r, local.Record)] == ["first"]
    meta.write_text("file_name,answer\na.png,other\n")  # same size: only the bytes tell
    assert [r.answer for r in _read_all(tmp_path) if isinstance(r, local.Record)] == ["other"]
