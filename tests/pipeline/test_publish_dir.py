"""One way to publish a folder: a single rename, unless another process finished the same folder first."""

from __future__ import annotations

import pytest

from medmix.core.writer import publish_dir


def _folder(path, text):
    path.mkdir()
    (path / "f.txt").write_text(text)
    return path


def test_first_publisher_wins_and_the_second_discards_its_copy(tmp_path):
    dest = tmp_path / "dest"
    assert publish_dir(_folder(tmp_path / ".a.tmp", "first"), dest) is True
    late = _folder(tmp_path / ".b.tmp", "second")
    assert publish_dir(late, dest) is False
    assert not late.exists() and (dest / "f.txt").read_text() == "first"


def test_a_file_in_the_way_is_an_error_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "dest"
    dest.write_text("not a folder")
    tmp = _folder(tmp_path / ".c.tmp", "x")
    with pytest.raises(OSError):
        publish_dir(tmp, dest)
    assert not tmp.exists() and dest.read_text() == "not a folder"
