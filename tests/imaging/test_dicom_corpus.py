"""Every pixel-bearing file of two public DICOM corpora through medmix, against pydicom's own array.

The corpora: the test files pydicom installs and those of `pydicom-data` (a dev dependency),
the two local sources `pydicom.data.get_testdata_files()` lists, read from disk without its
download step. Each file with pixel data
is one test. Why so broad: a fix for one odd file (big-endian palettes) once broke another (a
big-endian segmented palette, gdcm-US-ALOKA-16_big.dcm), and only a run over whole corpora sees
that.

What is compared, and why it is honest. medmix turns a file into one 8-bit display frame
(medmix/imaging/dicom.py): the middle frame; grey data through the Modality LUT, the first VOI LUT or
window (else the frame's min..max), mapped linearly onto 0..255, MONOCHROME1 inverted; palette
colour through its LUT; colour at its top 8 bits. The reference starts from pydicom's
`Dataset.pixel_array` (pydicom's decoders, its own colour-space conversion, all frames), picks
the same frame and applies the same steps with pydicom's public functions
(`apply_modality_lut`, `apply_voi_lut`, `apply_color_lut`). Then:
* the shape must be equal (the same frame, no crop, RGB stays RGB);
* grey frames must be an increasing linear function of the reference, every pixel within 1
  level of the least-squares line: the linear 0..255 mapping is medmix's documented choice and
  rounding to 8 bits the only loss (at most half a level), so anything more is a real
  difference (a wrong frame, byte order, LUT, window or sign), while the test does not
  re-implement medmix's exact scaling. (A correlation bound was tried first and is too weak a
  measure for the 16x16 DICOMDIR images with three grey levels.) A constant reference must give
  a constant frame;
* colour frames must equal the reference at its top 8 bits, within 1 level (lossy YBR
  conversions round).
A file pydicom cannot decode itself is no test of medmix: it must still come out of medmix as a
clean RowError naming the file (or as an image), and it is reported as a warning with
pydicom's reason, so the list stays visible in every run instead of being dropped.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.data import data_manager
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from medmix.core.errors import RowError
from medmix.imaging.dicom import decode_dicom, frame_index

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _corpus_files() -> list[tuple[str, Path]]:
    """(corpus, path) of every file of both corpora, found on disk only.

    Not `pydicom.data.get_testdata_files()`: besides the installed files it tries to download
    pydicom's 79 on-line test files into ~/.pydicom on every call, and a test must not touch the
    network. The same two places it searches locally are listed here directly.
    """
    own = Path(pydicom.data.__file__).parent / "test_files"
    files = [("pydicom", p) for p in sorted(own.rglob("*")) if p.is_file()]
    source = data_manager.external_data_sources().get("pydicom-data")
    if source is not None:
        files += [("pydicom-data", Path(p)) for p in sorted(source.get_paths("**/*", data_manager.DataTypes.DATASET))]
    return files


def _corpus() -> list[tuple[str, Path]]:
    """(test id, path) of every file in both corpora that parses and carries pixel data."""
    root_pydicom = Path(pydicom.data.__file__).parent / "test_files"
    out = []
    for corpus, path in _corpus_files():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, force=True)
        except Exception:  # noqa: BLE001 - not a DICOM file at all (a README, a JSON sidecar)
            continue
        if not any(tag in ds for tag in _PIXEL_TAGS):
            continue
        rel = path.relative_to(root_pydicom) if corpus == "pydicom" else path.name
        out.append((f"{corpus}:{rel}", path))
    return out


CORPUS = _corpus()


def test_both_corpora_are_installed_and_large():
    corpora = {test_id.split(":", 1)[0] for test_id, _ in CORPUS}
    assert corpora == {"pydicom", "pydicom-data"}, "pip install pydicom-data (it is in the dev extra)"
    assert len(CORPUS) >= 150  # 162 pixel-bearing files with pydicom 3.0 and pydicom-data 1.0


def _reference(ds: pydicom.Dataset) -> np.ndarray | None:
    """pydicom's frame after the display steps medmix documents; None where pydicom cannot decode."""
    arr = ds.pixel_array
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if n_frames > 1:
        arr = arr[frame_index(n_frames, "middle")]
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, _lut_words_little_endian(ds))
        return rgb >> 8 if rgb.dtype.itemsize > 1 else rgb
    if arr.ndim == 3:  # colour: pixel_array is already RGB; keep the top 8 of BitsStored
        shift = max(int(ds.get("BitsStored") or ds.BitsAllocated) - 8, 0)
        return arr.astype(np.int64) >> shift if arr.dtype != np.uint8 else arr
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds):
        try:
            values = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
        except (ValueError, TypeError, NotImplementedError, AttributeError, IndexError, KeyError):
            pass  # a VOI pydicom refuses: medmix falls back to min..max, so does the reference
    return -values if photometric == "MONOCHROME1" else values


def _lut_words_little_endian(ds: pydicom.Dataset) -> pydicom.Dataset:
    """`ds` for `apply_color_lut`, whose plain (not segmented) palette branch reads the LUT words
    with `np.frombuffer` in native little-endian order whatever the transfer syntax: in a
    big-endian file they are swapped here first, or the reference itself would be the all-dark
    picture (pydicom-data's OBXXXX1A_expb.dcm; its little-endian twin OBXXXX1A.dcm shows what is
    right). Segmented LUTs are unpacked in the declared byte order by pydicom and left alone."""
    if ds.original_encoding[1] is not False or "RedPaletteColorLookupTableData" not in ds:
        return ds
    ds = copy.deepcopy(ds)
    for colour in ("Red", "Green", "Blue"):
        keyword = f"{colour}PaletteColorLookupTableData"
        ds[keyword].value = np.frombuffer(ds[keyword].value, dtype=">u2").astype("<u2").tobytes()
    return ds


@pytest.mark.parametrize("path", [p for _, p in CORPUS], ids=[i for i, _ in CORPUS])
def test_medmix_matches_pydicom(path: Path):
    failure = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's per-value complaints; not what is tested
        ds = pydicom.dcmread(path, force=True)
        try:
            ref = _reference(ds)
        except Exception as exc:  # noqa: BLE001 - pydicom's own failure is what is reported
            failure = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
            try:
                decode_dicom(path.read_bytes(), name=path.name)
            except RowError as err:
                assert path.name in str(err)
        else:
            got = np.asarray(decode_dicom(path.read_bytes(), name=path.name)).astype(np.float64)
    if failure is not None:
        warnings.warn(f"pydicom itself cannot decode {path.name} ({failure}); medmix gives a clean RowError "
                      "or an image", stacklevel=1)
        return
    assert got.shape == ref.shape, f"{path.name}: medmix {got.shape} vs pydicom {ref.shape}"
    if ref.ndim == 3:
        diff = np.abs(got - ref.astype(np.float64))
        assert diff.max() <= 1, f"{path.name}: colour differs by up to {diff.max()} levels"
        return
    if np.ptp(ref) == 0:
        assert np.ptp(got) == 0, f"{path.name}: pydicom's frame is flat, medmix's is not"
        return
    # medmix's frame must be an increasing linear function of pydicom's, up to 8-bit rounding.
    design = np.stack([ref.ravel(), np.ones(ref.size)], axis=1)
    fit = np.linalg.lstsq(design, got.ravel(), rcond=None)[0]
    worst = np.abs(got.ravel() - design @ fit).max()
    assert fit[0] > 0, f"{path.name}: medmix's frame is inverted against pydicom's"
    assert worst <= 1.0, f"{path.name}: off a linear map of pydicom's frame by up to {worst:.2f} levels"


def test_the_big_endian_segmented_palette_renders_like_pydicom():
    """The regression itself, by name: quarantined with "Unable to determine the endianness"."""
    path = Path(pydicom.data.get_testdata_file("gdcm-US-ALOKA-16_big.dcm", download=False))
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
    assert "SegmentedRedPaletteColorLookupTableData" in ds
    got = np.asarray(decode_dicom(path.read_bytes(), name=path.name))
    assert got.shape == (480, 640, 3) and got.max() > 0
    assert np.array_equal(got, apply_color_lut(ds.pixel_array, ds) >> 8)
    little = Path(pydicom.data.get_testdata_file("gdcm-US-ALOKA-16.dcm", download=False))
    assert np.array_equal(got, np.asarray(decode_dicom(little.read_bytes(), name=little.name)))


def test_big_endian_plain_palette_renders_like_its_little_endian_twin():
    """pydicom-data's OBXXXX1A in both byte orders: one picture (the earlier big-endian fix)."""
    big, little = (Path(pydicom.data.get_testdata_file(n, download=False))
                   for n in ("OBXXXX1A_expb.dcm", "OBXXXX1A.dcm"))
    got = np.asarray(decode_dicom(big.read_bytes(), name=big.name))
    assert got.shape == (600, 800, 3) and got.max() > 0
    assert np.array_equal(got, np.asarray(decode_dicom(little.read_bytes(), name=little.name)))


def test_corpus_ids_are_unique():
    ids = [i for i, _ in CORPUS]
    assert len(ids) == len(set(ids)) and all(os.sep not in i.split(":", 1)[0] for i in ids)
