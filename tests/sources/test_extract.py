"""Hostile and honest archives: refusals name archive and member, and leave nothing behind."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from medmix.core.errors import MedmixError, UnsafeArchiveError
from medmix.fetch.extract import safe_extract

GOOD = {"a.txt": b"alpha\n", "sub/dir/b.bin": bytes(range(256)) * 10, "empty.txt": b""}


def make_zip(path: Path, members: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for item in members:
            if isinstance(item, tarfile.TarInfo):
                tf.addfile(item)
            else:
                name, data = item
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused(archive: Path, dest: Path, member: str, **limits: int) -> UnsafeArchiveError:
    """The refusal names archive and member; neither `dest` nor a temp folder nor a stray file exists."""
    before = sorted(p.name for p in dest.parent.parent.iterdir())
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(archive, dest, **limits)
    assert str(archive) in str(err.value) and member in str(err.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no half-extracted temp folder either
    assert sorted(p.name for p in dest.parent.parent.iterdir()) == before  # nothing escaped one level up
    return err.value


@pytest.fixture
def out(tmp_path: Path) -> Path:
    (tmp_path / "cache").mkdir()
    return tmp_path / "cache" / "extracted"


# -- honest archives ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_good_tar_extracts_exactly(tmp_path, out, mode):
    archive = make_tar(tmp_path / "good.tar.x", [(n, d) for n, d in GOOD.items()], mode)
    assert safe_extract(archive, out) == out
    assert tree(out) == GOOD


def test_good_zip_extracts_exactly_with_directory_entries(tmp_path, out):
    archive = make_zip(tmp_path / "good.zip", {**GOOD, "only/a/folder/": b""})
    safe_extract(archive, out)
    assert tree(out) == GOOD
    assert (out / "only" / "a" / "folder").is_dir()


@pytest.mark.parametrize(("opener", "name"), [(gzip.open, "x.h5.gz"), (bz2.open, "x.h5.bz2"), (lzma.open, "x.h5.xz")])
def test_single_compressed_file_becomes_a_folder_with_the_file(tmp_path, out, opener, name):
    with opener(tmp_path / name, "wb") as fh:
        fh.write(b"\x89HDF\r\n" + b"\x00" * 5000)
    safe_extract(tmp_path / name, out)
    assert tree(out) == {"x.h5": b"\x89HDF\r\n" + b"\x00" * 5000}


def test_format_is_sniffed_from_bytes_not_the_name(tmp_path, out):
    archive = make_tar(tmp_path / "misnamed.zip", [("a.txt", b"tar inside")], "w:gz")
    safe_extract(archive, out)
    assert tree(out) == {"a.txt": b"tar inside"}


def test_extraction_is_idempotent(tmp_path, out):
    archive = make_zip(tmp_path / "good.zip", GOOD)
    first = safe_extract(archive, out)
    stamp = (out / "a.txt").stat().st_mtime_ns
    archive.unlink()  # a second call must not even need the archive
    assert safe_extract(archive, out) == first
    assert (out / "a.txt").stat().st_mtime_ns == stamp and tree(out) == GOOD


def test_links_inside_the_archive_are_materialized_as_files(tmp_path, out):
    archive = make_tar(tmp_path / "links.tar", [
        ("data/real.txt", b"payload"),
        link("data/sym.txt", "real.txt"),
        link("alias/chain.txt", "../data/sym.txt"),
        link("data/hard.txt", "data/real.txt", tarfile.LNKTYPE),
    ])
    safe_extract(archive, out)
    assert tree(out) == {f"{p}": b"payload" for p in
                         ["alias/chain.txt", "data/hard.txt", "data/real.txt", "data/sym.txt"]}
    assert not any(p.is_symlink() for p in out.rglob("*"))


def test_zip_symlink_inside_is_materialized(tmp_path, out):
    archive = make_zip(tmp_path / "l.zip", {"a/real.txt": b"r"}, symlinks={"a/ln.txt": "real.txt"})
    safe_extract(archive, out)
    assert tree(out) == {"a/real.txt": b"r", "a/ln.txt": b"r"}
    assert not (out / "a" / "ln.txt").is_symlink()


# -- hostile archives -----------------------------------------------------------------------------
def test_zip_dotdot_entry_is_refused(tmp_path, out):
    archive = make_zip(tmp_path / "evil.zip", {"ok.txt": b"1", "../../evil.txt": b"pwned"})
    assert_refused(archive, out, "../../evil.txt")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_backslash_dotdot_entry_is_refused(tmp_path, out):
    archive = make_zip(tmp_path / "evil.zip", {"..\\..\\evil.txt": b"pwned"})
    assert_refused(archive, out, "evil.txt")


def test_zip_absolute_path_is_refused(tmp_path, out):
    archive = make_zip(tmp_path / "abs.zip", {"/tmp/medmix-evil.txt": b"pwned"})
    err = assert_refused(archive, out, "/tmp/medmix-evil.txt")
    assert "absolute" in str(err)
    assert not Path("/tmp/medmix-evil.txt").exists()


def test_zip_symlink_escaping_is_refused(tmp_path, out):
    archive = make_zip(tmp_path / "l.zip", {}, symlinks={"ln": "../../etc/passwd"})
    assert_refused(archive, out, "ln")


def test_tar_symlink_escaping_the_target_is_refused(tmp_path, out):
    archive = make_tar(tmp_path / "sym.tar", [link("innocent", "../outside"), ("innocent/x.txt", b"x")])
    err = assert_refused(archive, out, "innocent")
    assert "outside the target folder" in str(err)


def test_tar_symlink_to_an_absolute_path_is_refused(tmp_path, out):
    archive = make_tar(tmp_path / "sym.tar", [link("passwd", "/etc/passwd")])
    assert_refused(archive, out, "passwd")


def test_tar_symlink_to_a_folder_is_refused(tmp_path, out):
    # `a/up -> .` then `a/up/esc -> ../../x` is the classic chain: harmless one link at a time,
    # an escape once `a/up` is a real link on disk. Links to folders are refused outright.
    archive = make_tar(tmp_path / "chain.tar", [("a/x", b"1"), link("a/up", "."), link("a/up/esc", "../../x")])
    err = assert_refused(archive, out, "a/up")
    assert "links to the folder" in str(err)


def test_tar_hardlink_escaping_is_refused(tmp_path, out):
    archive = make_tar(tmp_path / "hard.tar", [link("h", "../../etc/passwd", tarfile.LNKTYPE)])
    err = assert_refused(archive, out, "h")
    assert "hardlink" in str(err)


def test_tar_link_loop_is_refused(tmp_path, out):
    archive = make_tar(tmp_path / "loop.tar", [link("a", "b"), link("b", "a")])
    assert_refused(archive, out, "loop")


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_tar_special_files_are_refused(tmp_path, out, kind):
    special = tarfile.TarInfo("dev/thing")
    special.type = kind
    archive = make_tar(tmp_path / "dev.tar", [("a.txt", b"1"), special])
    assert_refused(archive, out, "dev/thing")


def test_tar_dotdot_member_is_refused(tmp_path, out):
    archive = make_tar(tmp_path / "dd.tar.gz", [("x/../../evil.txt", b"pwned")], "w:gz")
    assert_refused(archive, out, "x/../../evil.txt")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_bomb_member_over_the_limit_is_refused_while_streaming(tmp_path, out):
    archive = make_zip(tmp_path / "bomb.zip", {"small.txt": b"ok", "zeros.bin": b"\0" * 1_000_000})
    assert archive.stat().st_size < 5_000  # it really is a bomb: tiny archive, big content
    assert_refused(archive, out, "zeros.bin", max_member_bytes=100_000)


def test_zip_whose_header_understates_the_size_cannot_smuggle_bytes(tmp_path, out):
    archive = make_zip(tmp_path / "liar.zip", {"zeros.bin": b"\0" * 200_000})
    data = bytearray(archive.read_bytes())
    # rewrite the uncompressed size (local header offset 22, central directory offset 24) to 1000
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    data[local + 22: local + 26] = (1000).to_bytes(4, "little")
    data[central + 24: central + 28] = (1000).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(MedmixError, match="corrupt") as err:
        safe_extract(archive, out, max_member_bytes=100_000)
    assert str(archive) in str(err.value)
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_tar_gz_bomb_over_the_total_limit_is_refused(tmp_path, out):
    members = [(f"part{i}.bin", b"\0" * 40_000) for i in range(5)]
    archive = make_tar(tmp_path / "bomb.tar.gz", members, "w:gz")
    err = assert_refused(archive, out, "part", max_member_bytes=50_000, max_total_bytes=100_000)
    assert "in total" in str(err)


def test_too_many_members_is_refused(tmp_path, out):
    archive = make_zip(tmp_path / "many.zip", {f"f{i}.txt": b"" for i in range(20)})
    assert_refused(archive, out, "f10.txt", max_members=10)


def test_not_an_archive_is_a_clear_error(tmp_path, out):
    junk = tmp_path / "notes.zip"
    junk.write_bytes(b"this is not an archive at all")
    with pytest.raises(MedmixError, match="not a zip, tar"):
        safe_extract(junk, out)
    assert not out.exists()


def test_truncated_tar_gz_is_a_corrupt_archive_error(tmp_path, out):
    archive = make_tar(tmp_path / "t.tar.gz", [("a.bin", bytes(range(256)) * 400)], "w:gz")
    archive.write_bytes(archive.read_bytes()[:-300])
    with pytest.raises(MedmixError, match="corrupt or truncated") as err:
        safe_extract(archive, out)
    assert str(archive) in str(err.value)
    assert not out.exists() and list(out.parent.iterdir()) == []
