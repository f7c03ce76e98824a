"""A hand-placed folder can be pinned like a download: its lock entry digests every file's bytes."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import pytest

from medmix.core.errors import FetchError
from medmix.doctor import check_recipe
from medmix.pipeline import BuildOptions, build
from medmix.planning import lock_recipe
from medmix.recipe import parse_recipe

RECIPE = """
name: folder-pin
seed: 0
sources:
  scans:
    adapter: local
    from: {folder}
    options: {{domain: radiology, task: caption, license: MIT}}
"""


@pytest.fixture
def pinned(tmp_path) -> tuple[Path, object, Path]:
    folder = tmp_path / "scans"
    shutil.copytree(Path(str(resources.files("medmix") / "data" / "demo" / "dicom")), folder)
    recipe = parse_recipe(RECIPE.format(folder=folder), str(tmp_path / "r.yaml"))
    lock = lock_recipe(recipe, BuildOptions(out=tmp_path / "o", cache=tmp_path / "c"), offline=True)
    lock_file = tmp_path / "folder-pin.lock.json"
    lock_file.write_text(json.dumps(lock))
    return folder, recipe, lock_file


def _build(tmp_path: Path, recipe, lock_file: Path, name: str) -> dict:
    return build(recipe, BuildOptions(out=tmp_path / name, cache=tmp_path / "cache", lock=lock_file),
                 log=lambda m: None)


def test_lock_pins_the_folder_by_content_even_offline(pinned, tmp_path):
    folder, recipe, lock_file = pinned
    entry = json.loads(lock_file.read_text())["sources"]["scans"]["."]
    assert entry["files"] == 9 and len(entry["content_sha256"]) == 64
    manifest = _build(tmp_path, recipe, lock_file, "a")
    assert manifest["unpinned_upstreams"] == []
    assert manifest["sources"]["scans"]["pinned"] is True


def test_an_edited_file_of_the_same_size_is_refused(pinned, tmp_path):
    folder, recipe, lock_file = pinned
    victim = folder / "ct" / "CT_small.dcm"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # one pixel byte: same size, other content
    victim.write_bytes(bytes(data))
    with pytest.raises(FetchError, match=r"scans: the folder's content \(9 files.*not the one the lock pins"):
        _build(tmp_path, recipe, lock_file, "b")
    checks = check_recipe(recipe, BuildOptions(out=tmp_path / "o", cache=tmp_path / "c", lock=lock_file))
    assert [(c.status, c.detail.endswith("content sha256 differs)")) for c in checks] == [("missing", True)]


def test_the_shipped_demo_folder_is_pinned():
    """The embedded demo used to print "1 upstream file(s) are not pinned by sha256"."""
    from medmix.fetch.lock import default_lock_path, folder_entry

    lock = json.loads(default_lock_path("demo").read_text())
    demo = Path(str(resources.files("medmix") / "data" / "demo" / "dicom"))
    assert lock["sources"]["dicom_demo"]["."]["content_sha256"] == folder_entry(demo)["content_sha256"]
