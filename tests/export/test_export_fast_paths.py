"""The export's fast paths give the same bytes as the spellings they replace (issue 26, speed).

Each fast path (plain-string templates, a reused C JSON encoder, one write per unit, image writes
handed to the I/O threads in batches) exists only because it was measured faster; these tests pin
that it changes nothing an export writes.
"""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from medmix.core.schema import TASKS
from medmix.export import FORMATS, export
from medmix.export import conversation as conv
from medmix.export import engine as core
from medmix.export.jsonconv import ArrayWriter
from medmix.export.webdataset import TarWriter


def _text(rng: random.Random) -> str | None:
    pick = rng.random()
    if pick < 0.1:
        return None
    if pick < 0.2:
        return ""
    words = ["lesion", "<image>", " ", "\n", "é", "CT", "Answer:", "(A)", "{x}", "tumour"]
    return "".join(rng.choice(words) for _ in range(rng.randint(1, 8)))


def _rows(n: int, seed: int = 3) -> list[tuple[dict, bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        options = None if rng.random() < 0.4 else [_text(rng) or "" for _ in range(rng.randint(0, 30))]
        answer = rng.choice(options) if options and rng.random() < 0.6 else _text(rng)
        row = {"task": rng.choice([*sorted(TASKS), None]), "question": _text(rng), "context": _text(rng),
               "options": options, "answer": answer}
        out.append((row, rng.random() < 0.5))
    return out


def test_fast_templates_are_in_use_and_agree_with_the_trainer_on_probes():
    assert conv._FAST_OK, "builtin_turns disagrees with trainer.prompts.render on a probe: update builtin_turns"
    for row in conv.PROBES:
        for has_image in (False, True):
            assert conv.builtin_turns(row, has_image) == conv.reference_turns(row, has_image)


def test_fast_templates_agree_with_the_trainer_on_generated_rows():
    rows = _rows(5000)
    assert any(r["task"] == "mcqa" and r["answer"] in (r["options"] or []) for r, _ in rows)  # the letter branch
    for row, has_image in rows:
        assert conv.builtin_turns(row, has_image) == conv.reference_turns(row, has_image), row


def test_turns_fall_back_to_the_trainer_when_the_probe_fails(monkeypatch):
    def broken(row, has_image):
        raise AssertionError("the fast path must not be used when the probe failed")

    monkeypatch.setattr(conv, "_FAST_OK", False)
    monkeypatch.setattr(conv, "builtin_turns", broken)
    row, has_image = conv.PROBES[1], True
    assert conv.Templates().turns(row, has_image) == conv.reference_turns(row, has_image)


@pytest.mark.parametrize("obj", [
    {"id": "a/1", "conversations": [{"from": "human", "value": "<image>\nQ: é \u2028 \"x\"\\"}], "n": None},
    {"f": 1.5, "i": -3, "b": True, "nan": float("nan"), "l": [[], {}, ["\x00"]], "u": "😀"},
    ["not", "a", "dict"],
])
def test_dumps_is_compact_json_dumps(obj):
    assert core.dumps(obj) == json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@pytest.mark.parametrize("writer", [ArrayWriter, TarWriter])
def test_add_many_writes_the_bytes_of_add_one_by_one(writer, tmp_path):
    blobs = [f"{{\"n\":{i}}}".encode() for i in range(7)]
    one, many = writer(tmp_path / "one"), writer(tmp_path / "many")
    for b in blobs:
        one.add(b)
    many.add(blobs[0])
    many.add_many(blobs[1:4])
    many.add_many([])
    many.add_many(blobs[4:])
    assert one.finish() == many.finish()
    assert (tmp_path / "one").read_bytes() == (tmp_path / "many").read_bytes()
    assert many.rows == len(blobs)


def test_batched_image_writes_land_once_and_failures_surface(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    monkeypatch.setattr(core, "_IO", None)
    datas = [bytes([i % 5]) * 100 for i in range(3 * core.IMAGE_BATCH + 1)]  # 5 distinct pictures, repeated
    for data in datas:
        sha = hashlib.sha256(data).hexdigest()
        assert core.queue_image(str(tmp_path), sha, "jpg", data) == f"images/{sha}.jpg"
    core._drain()
    files = sorted((tmp_path / "images").iterdir())
    assert len(files) == 5
    assert all(hashlib.sha256(f.read_bytes()).hexdigest() == f.stem for f in files)
    # a write that fails (no images/ folder there) is raised by the drain, even when queued last
    core.queue_image(str(tmp_path / "missing"), "0" * 64, "jpg", b"x")
    with pytest.raises(FileNotFoundError):
        core._drain()
    core._close_io()


@pytest.mark.parametrize("fmt", ["llava", "webdataset"])
def test_byte_shards_cut_the_same_with_whole_unit_writes(fmt, generated, tmp_path, monkeypatch):
    """A byte limit that falls inside units and one that never does: same bytes as one add per row."""
    limit = "300KB" if fmt == "llava" else "2MB"
    fast = export(generated, tmp_path / "fast", fmt, shard_size=limit, log=lambda m: None)
    def one_by_one(self, blobs):
        for b in blobs:
            self.add(b)

    monkeypatch.setattr(core.ShardWriter, "add_many", one_by_one)
    slow = export(generated, tmp_path / "slow", fmt, shard_size=limit, log=lambda m: None)
    assert len(fast.index["shards"]) > 2
    assert fast.index["shards"] == slow.index["shards"]
    for s in fast.index["shards"]:
        assert (tmp_path / "fast" / s["path"]).read_bytes() == (tmp_path / "slow" / s["path"]).read_bytes()
    assert FORMATS[fmt].name == fmt
