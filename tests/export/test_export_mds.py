"""MDS: the layout MDSWriter documents (checked here field by field), and, in the slow test, read back by
mosaicml-streaming's own `StreamingDataset` in an isolated virtual environment.

Why a venv: mosaicml-streaming 0.13 pins numpy<2.2 and transformers<5 and needs torchvision, so it
cannot be installed beside medmix. The venv is built once (`python -m venv --system-site-packages`,
then `pip install mosaicml-streaming torch==<this machine's torch>`: the pin keeps the CPU torch
already installed instead of fetching a multi-GB CUDA build; numpy and transformers get the versions
streaming wants inside the venv) and cached under $MEDMIX_TEST_CACHE (default: <tmp>/medmix-test-cache).
Run it with `python -m pytest -m slow tests/export/test_export_mds.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from medmix.export import export
from medmix.export.mds import NAMES, config

STREAMING = "mosaicml-streaming==0.13.0"
HERE = Path(__file__).parent


def _quiet(message: str) -> None:
    pass


def _decode(path: Path) -> tuple[dict, list[dict]]:
    """A shard by the MDS layout: n, offsets, config JSON, then per sample uint32 sizes and the columns."""
    data = path.read_bytes()
    (n,) = struct.unpack_from("<I", data)
    offsets = struct.unpack_from(f"<{n + 1}I", data, 4)
    head_end = 4 + 4 * (n + 1)
    cfg = json.loads(data[head_end:offsets[0]])
    samples = []
    for a, b in zip(offsets, offsets[1:]):
        sizes = struct.unpack_from(f"<{len(NAMES)}I", data, a)
        pos, values = a + 4 * len(NAMES), {}
        for name, size in zip(NAMES, sizes):
            values[name] = data[pos:pos + size]
            pos += size
        assert pos == b
        samples.append(values)
    assert offsets[-1] == len(data)
    return cfg, samples


def test_mds_layout_matches_mdswriter(demo, demo_rows, tmp_path):
    result = export(demo, tmp_path / "mds", "mds", shard_size="64KiB", log=_quiet)
    index = json.loads((tmp_path / "mds" / "index.json").read_text())
    assert index["version"] == 2 and len(index["shards"]) == len(result.index["shards"]) > 1
    got = []
    for entry, shard in zip(index["shards"], result.index["shards"], strict=True):
        assert set(entry) == {"samples", "raw_data", "zip_data", "version", "format", "compression", "hashes",
                              "size_limit", "column_names", "column_encodings", "column_sizes"}
        assert entry["raw_data"] == {"basename": shard["path"], "bytes": shard["bytes"], "hashes": {}}
        assert entry["zip_data"] is None and entry["samples"] == shard["rows"]
        cfg, samples = _decode(tmp_path / "mds" / shard["path"])
        assert cfg == config(64 * 1024) == {k: v for k, v in entry.items() if k not in ("samples", "raw_data",
                                                                                          "zip_data")}
        assert len(samples) == shard["rows"] and shard["bytes"] <= 64 * 1024
        got += samples
    assert len(got) == len(demo_rows)
    for sample, row in zip(got, demo_rows, strict=True):
        record = json.loads(sample["record"])
        assert sample["id"].decode() == row["id"] == record["id"]
        assert record["license"] == row["license"] and record["source"] == row["source"]
        assert sample["image"] == (row["image"]["bytes"] if row["image"] else b"")


def _venv() -> Path:
    """The cached venv with mosaicml-streaming; built on first use (minutes)."""
    cache = Path(os.environ.get("MEDMIX_TEST_CACHE", Path(tempfile.gettempdir()) / "medmix-test-cache"))
    venv = cache / f"mds-venv-{STREAMING.split('==')[1]}"
    python = venv / "bin" / "python"
    if not (venv / ".medmix-ready").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", "--system-site-packages", str(venv)], check=True)
        pins = [STREAMING]
        try:
            pins.append(f"torch=={version('torch').split('+')[0]}")
        except PackageNotFoundError:
            pass
        proc = subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], capture_output=True, text=True)
        assert proc.returncode == 0, f"pip install {pins} failed:\n{proc.stderr[-3000:]}"
        (venv / ".medmix-ready").write_text(" ".join(pins) + "\n")
    return python


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_streaming_dataset_reads_every_sample_once(demo, demo_rows, generated, generated_rows, tmp_path):
    python = _venv()
    for name, mixture, rows, size in (("demo", demo, demo_rows, "64KiB"), ("generated", generated, generated_rows,
                                                                              "300")):
        out = tmp_path / name
        result = export(mixture, out, "mds", shard_size=size, workers=2, log=_quiet)
        assert len(result.index["shards"]) > 1
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run([str(python), str(HERE / "read_mds.py"), str(out)], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        read = json.loads(proc.stdout)
        assert read["streaming_version"] == STREAMING.split("==")[1]
        assert read["len"] == len(rows) == len(read["samples"])
        assert [s["id"] for s in read["samples"]] == [r["id"] for r in rows]  # every sample once, in order
        for sample, row in zip(read["samples"], rows, strict=True):
            record = sample["record"]  # decoded by streaming's own `json` encoding
            assert record["id"] == row["id"] and record["license"] == row["license"]
            assert record["source"] == row["source"] and record["native_id"]
            assert record["conversations"][1]["from"] == "gpt"
            image = row["image"]["bytes"] if row["image"] else None
            assert sample["image_sha256"] == (hashlib.sha256(image).hexdigest() if image else None)
