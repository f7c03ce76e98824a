"""`medmix export` on the demo mixture, read back by the real readers: `webdataset` for tar shards,
`datasets.load_dataset("json")` for LLaVA / ShareGPT. Every row comes back once, in order, with its
provenance and license; images decode and are the stored bytes; the conversation is the trainer's
template; the README is push's card; non-redistributable rows are refused unless allowed; a failed or
killed export leaves nothing under OUT and can be re-run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import webdataset as wds
import yaml
from PIL import Image
from typer.testing import CliRunner

from medmix.cli.main import app
from medmix.core.errors import MedmixError
from medmix.export import FORMATS, ShardSize, export, parse_shard_size
from medmix.publish import hub
from trainer.prompts import render

PROVENANCE = ("source", "license", "split", "task", "domain")


def _quiet(message: str) -> None:
    pass


def _manifest(mixture: Path) -> dict:
    return json.loads((mixture / "manifest.json").read_text())


def _revision(manifest: dict, source: str) -> str | None:
    revs = sorted({u["revision"] for u in manifest["sources"][source]["upstream"] if u.get("revision")})
    return ",".join(revs) or None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_conversation(row: dict, human: str, gpt: str) -> None:
    """The two turns are the trainer's template: prompt + "\\nAnswer: " + target is exactly `render`."""
    has_image = bool(row["image"] and row["image"]["bytes"])
    full = "".join(p.text for p in render(row, has_image=has_image))
    assert human + "\nAnswer: " + gpt == full
    assert human.startswith("<image>\n") == has_image and human.count("<image>") == int(has_image)


def test_webdataset_reads_back_every_row_once_with_its_license_and_image(demo, demo_rows, tmp_path):
    out = tmp_path / "wds"
    result = export(demo, out, "webdataset", shard_size="30", log=_quiet)
    manifest = _manifest(demo)
    shards = result.index["shards"]
    assert [s["rows"] for s in shards] == [30, 30, 30, len(demo_rows) - 90]
    urls = [str(out / s["path"]) for s in shards]
    samples = list(wds.WebDataset(urls, shardshuffle=False))  # raw bytes: compare with the stored ones
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(len(demo_rows))]
    for sample, row in zip(samples, demo_rows, strict=True):
        record = json.loads(sample["json"])
        assert record["id"] == row["id"]
        for key in (*PROVENANCE, "question", "answer", "options", "context", "meta", "modality", "image_hash",
                    "width", "height"):
            assert record[key] == row[key], key
        assert record["native_id"] == row["id"].split("/", 1)[1].split("#")[0]
        assert record["upstream_revision"] == _revision(manifest, row["source"])
        assert record["adapter"] == manifest["sources"][row["source"]]["adapter"]
        conv = record["conversations"]
        _check_conversation(row, conv[0]["value"], conv[1]["value"])
        image = row["image"]["bytes"] if row["image"] else None
        members = {k for k in sample if not k.startswith("__")}
        if image:
            ext = record["image"].split(".")[-1]
            assert members == {"json", "txt", ext} and sample[ext] == image  # as stored, not re-encoded
            assert record["image_sha256"] == _sha(image)
            assert Image.open(io.BytesIO(sample[ext])).size == (row["width"], row["height"])
        else:
            assert members == {"json", "txt"} and record["image_sha256"] is None
    decoded = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert sum(1 for s in decoded if isinstance(s.get("jpg") or s.get("png"), Image.Image)) == sum(
        1 for r in demo_rows if r["image"])


@pytest.mark.parametrize("fmt", ["llava", "sharegpt"])
def test_conversation_json_loads_with_datasets_and_images_exist_once(fmt, demo, demo_rows, tmp_path):
    out = tmp_path / fmt
    result = export(demo, out, fmt, log=_quiet)
    assert [s["path"] for s in result.index["shards"]] == ["train-00000.json"]
    ds = datasets.load_dataset("json", data_files=str(out / "train-*.json"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == len(demo_rows)
    raw = json.loads((out / "train-00000.json").read_text())
    turns = "conversations" if fmt == "llava" else "messages"
    assert sum(len(r[turns]) == 2 for r in raw) == len(demo_rows)  # one conversation per row
    assert ds["id"] == [r["id"] for r in demo_rows]
    stored = set()
    for rec, row in zip(raw, demo_rows, strict=True):
        for key in ("source", "license", "split", "task", "domain"):
            assert rec[key] == row[key]
        assert rec["native_id"] and rec["upstream_revision"] == _revision(_manifest(demo), row["source"])
        if fmt == "llava":
            human, gpt = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
            paths = [rec["image"]] if "image" in rec else []
        else:
            assert [m["role"] for m in rec["messages"]] == ["user", "assistant"]
            human, gpt = rec["messages"][0]["content"], rec["messages"][1]["content"]
            paths = rec["images"]
        _check_conversation(row, human, gpt)
        image = row["image"]["bytes"] if row["image"] else None
        assert len(paths) == (1 if image else 0)
        for rel in paths:
            path = out / rel
            data = path.read_bytes()
            assert data == image and path.stem == _sha(image)
            with Image.open(path) as im:
                im.load()
                assert im.size == (row["width"], row["height"])
            stored.add(_sha(image))
    files = sorted(p for p in (out / "images").rglob("*") if p.is_file())
    assert len(files) == len(stored) == result.index["image_files"]
    assert len(files) < sum(1 for r in demo_rows if r["image"])  # shared images are one file


def test_user_templates_replace_named_tasks_only(demo, demo_rows, tmp_path):
    path = tmp_path / "templates.yaml"
    path.write_text(yaml.safe_dump({"vqa": {"human": "Look: {question}", "gpt": "A: {answer}"}}))
    out = tmp_path / "llava"
    result = export(demo, out, "llava", template=path, log=_quiet)
    assert result.index["templates"] == f"user YAML sha256 {_sha(path.read_bytes())}"
    raw = json.loads((out / "train-00000.json").read_text())
    for rec, row in zip(raw, demo_rows, strict=True):
        human, gpt = (t["value"] for t in rec["conversations"])
        if row["task"] == "vqa":
            assert human == f"<image>\nLook: {row['question'].strip()}" and gpt == f"A: {row['answer'].strip()}"
        else:
            _check_conversation(row, human, gpt)


@pytest.mark.parametrize(("text", "key", "problem"), [
    ("- a\n- b\n", "", "expected a mapping"),
    ("vqa: [1, 2]\n", "vqa", "needs exactly the keys"),
    ("captioning: {human: x, gpt: y}\n", "key 'captioning'", "is not a task"),
    ("vqa: {human: '{question}', gpt: '{answr}'}\n", "vqa.gpt", "unknown field(s) ['answr']"),
    ("vqa: {human: '{question', gpt: x}\n", "vqa.human", "not a valid format string"),
    ("vqa: {human: x, gpt: '{image}{answer}'}\n", "vqa.gpt", "belongs to the human turn"),
    ("vqa: {human: '{question!r}', gpt: x}\n", "vqa.human", "format spec or conversion"),
    ("vqa: {human: '', gpt: x}\n", "vqa.human", "non-empty string"),
    ("vqa: {human: x, gpt: y\n", "", "not valid YAML"),
])
def test_bad_template_files_are_refused_naming_file_and_key(demo, tmp_path, text, key, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MedmixError) as err:
        export(demo, tmp_path / "out", "llava", template=path, log=_quiet)
    assert str(err.value).startswith(f"{path}: {key}") and problem in str(err.value)
    assert not (tmp_path / "out").exists()


def _section(card: str, title: str) -> str:
    start = card.index(f"## {title}")
    return card[start:card.index("\n## ", start + 3)]


def test_readme_is_the_push_card_with_licenses_and_bibtex(demo, tmp_path):
    export(demo, tmp_path / "wds", "webdataset", log=_quiet)
    card = (tmp_path / "wds" / "README.md").read_text()
    pushed = (hub.prepare(demo, tmp_path / "push", repo_id="me/demo", log=_quiet).folder / "README.md").read_text()
    for title in ("Composition", "Licenses", "How it was built", "Citations"):
        assert _section(card + "\n## end", title) == _section(pushed + "\n## end", title)
    assert "```bibtex" in card and "`CC-BY-4.0`" in card and "medmix export --format webdataset" in card
    assert "configs:" not in card.split("---")[1]  # not a Hub repository
    assert (tmp_path / "wds" / "manifest.json").read_bytes() == (demo / "manifest.json").read_bytes()


@pytest.fixture()
def gated(generated, tmp_path) -> Path:
    """The generated mixture with one source built by an adapter whose terms forbid redistribution."""
    import shutil

    mix = tmp_path / "gated"
    shutil.copytree(generated, mix)
    manifest = json.loads((mix / "manifest.json").read_text())
    manifest["sources"]["nct_crc_he"]["adapter"] = "pathvqa"
    (mix / "manifest.json").write_text(json.dumps(manifest))
    return mix


def test_nonredistributable_rows_are_refused_unless_allowed(gated, generated_rows, tmp_path):
    n = sum(1 for r in generated_rows if r["source"] == "nct_crc_he")
    with pytest.raises(MedmixError, match="--allow-nonredistributable") as err:
        export(gated, tmp_path / "out", "llava", log=_quiet)
    assert "nct_crc_he" in str(err.value) and f"{n:,} row(s)" in str(err.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.medmix-export-tmp-*"))
    logged: list[str] = []
    result = export(gated, tmp_path / "out", "llava", allow_nonredistributable=True, log=logged.append)
    assert result.forced == {"nct_crc_he": n} and result.index["nonredistributable_rows_included"] == {"nct_crc_he": n}
    assert logged and logged[0].startswith("WARNING")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "was exported on explicit request** (`--allow-nonredistributable`)" in card


def test_failed_export_leaves_nothing_and_reruns(demo, demo_rows, tmp_path, monkeypatch):
    out = tmp_path / "out"
    fmt = FORMATS["webdataset"]
    real, calls = fmt.encode, []

    def failing(sample, ctx):
        calls.append(1)
        if len(calls) > 50:
            raise OSError("disk full")
        return real(sample, ctx)

    monkeypatch.setattr(fmt, "encode", failing)
    with pytest.raises(OSError, match="disk full"):
        export(demo, out, "webdataset", shard_size="20", log=_quiet)
    assert not out.exists() and os.listdir(tmp_path) == []
    monkeypatch.setattr(fmt, "encode", real)
    assert export(demo, out, "webdataset", shard_size="20", log=_quiet).index["rows"] == len(demo_rows)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(MedmixError, match="not an empty folder"):
        export(demo, tmp_path / "full", "webdataset", log=_quiet)


KILL = """
import os, signal, sys
from medmix.export import FORMATS, export
fmt = FORMATS["llava"]
real, n = fmt.encode, [0]
def encode(sample, ctx):
    n[0] += 1
    if n[0] == 60:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(sample, ctx)
fmt.encode = encode
export(sys.argv[1], sys.argv[2], "llava", log=lambda m: None)
"""


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha(p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def test_killed_export_leaves_only_a_temp_folder_that_the_rerun_removes(demo, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILL, str(demo), str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -9, proc.stderr
    left = list(tmp_path.glob(".out.medmix-export-tmp-*"))
    assert not out.exists() and len(left) == 1 and any(left[0].rglob("*.jpg"))
    export(demo, out, "llava", log=_quiet)
    assert not list(tmp_path.glob(".out.medmix-export-tmp-*"))
    export(demo, tmp_path / "clean", "llava", log=_quiet)
    assert _tree(out) == _tree(tmp_path / "clean")


def test_cli_exports_and_reports_bad_options(demo, demo_rows, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["export", str(demo), str(tmp_path / "mds"), "--format", "mds", "--shard-size", "40"])
    assert ok.exit_code == 0, ok.output
    assert f"exported {len(demo_rows)} rows" in ok.output and "3 shard(s)" in ok.output
    bad = runner.invoke(app, ["export", str(demo), str(tmp_path / "x"), "--format", "parquet"])
    assert bad.exit_code == 2 and "use one of webdataset, llava, sharegpt, mds" in bad.output
    bad = runner.invoke(app, ["export", str(demo), str(tmp_path / "x"), "--shard-size", "12XB"])
    assert bad.exit_code == 2 and "--shard-size '12XB'" in bad.output
    bad = runner.invoke(app, ["export", str(demo), str(tmp_path / "x"), "--split", "test"])
    assert bad.exit_code == 2 and "no shards for split 'test'" in bad.output
    assert not (tmp_path / "x").exists()


def test_parse_shard_size():
    assert parse_shard_size("1000") == ShardSize(rows=1000)
    assert parse_shard_size("512MB") == ShardSize(bytes=512 * 10**6)
    assert parse_shard_size("64MiB") == ShardSize(bytes=64 * 2**20)
    assert parse_shard_size("1.5GB") == ShardSize(bytes=1_500_000_000)
    assert parse_shard_size("0") == ShardSize() and parse_shard_size(None) == ShardSize()
    for bad in ("1.5", "abc", "-3", "10 apples"):
        with pytest.raises(MedmixError, match="--shard-size"):
            parse_shard_size(bad)


def test_a_failed_image_write_fails_the_export(demo, tmp_path, monkeypatch):
    from medmix.export import engine as core

    real, calls = core.write_image, []

    def flaky(staging, sha, ext, data):
        calls.append(sha)
        if len(calls) == 10:
            raise OSError(28, "No space left on device")
        return real(staging, sha, ext, data)

    monkeypatch.setattr(core, "write_image", flaky)
    with pytest.raises(OSError, match="No space left"):
        export(demo, tmp_path / "out", "sharegpt", log=_quiet)
    assert os.listdir(tmp_path) == [] and len(calls) >= 10
