"""DICOM → one displayable 8-bit frame (L or RGB), pixels only.

Why this exists: radiology sources ship DICOM, whose stored values are not display values. A
viewer applies the Modality LUT (rescale to e.g. Hounsfield units), then the VOI LUT or window
the modality chose, then inverts MONOCHROME1; colour data may be palette-indexed or YCbCr.
Training on raw stored values gives black or washed-out images, so we do what a viewer does,
with pydicom's own implementations of each step.

Choices, each deliberate:
* One frame per file. Multi-frame files give the middle frame by default (the most
  representative slice of a cine or volume; the first is often a scout or a blank lead-in), or
  the first with `frame="first"`. Only that frame is decoded.
* VOI: the first VOI LUT / window when a file lists several (the modality's primary choice);
  with none, the frame's own min..max. The window's output range is mapped linearly to 0..255.
* MONOCHROME1 is inverted after the VOI step, so bright means dense bone, as in MONOCHROME2.
* Colour: PALETTE COLOR through its LUT, YBR_* through `convert_color_space`; 16-bit colour
  keeps its top 8 bits.
* Nothing from the header is copied out: the caller gets a bare Pillow image made from a
  numpy array, so no tag value (names, ids, dates, institutions) can reach the output file.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, convert_color_space, get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medmix.core.errors import RowError

DICM_OFFSET = 128
MAGIC = b"DICM"


def has_dicom_magic(data: bytes) -> bool:
    """The Part 10 preamble: 128 free bytes, then "DICM"."""
    return data[DICM_OFFSET:DICM_OFFSET + 4] == MAGIC


def frame_index(n_frames: int, frame: str) -> int:
    """Which frame `frame` picks out of `n_frames` ("middle" of 2 is the second)."""
    if frame == "first" or n_frames <= 1:
        return 0
    if frame == "middle":
        return n_frames // 2
    raise ValueError(f"frame policy must be 'middle' or 'first', got {frame!r}")


def read_dataset(data: bytes, *, name: str) -> Dataset:
    """Parse the whole file (pixel data stays encoded until one frame is asked for).

    Files without the "DICM" preamble (old ACR-NEMA style, e.g. a bare .dcm) are read with
    `force=True`; the caller only gets here for those when the name says .dcm.
    """
    try:
        with warnings.catch_warnings():
            # pydicom warns about every odd VR; the row either decodes or gets a RowError.
            warnings.simplefilter("ignore")
            return dcmread(io.BytesIO(data), force=not has_dicom_magic(data))
    except InvalidDicomError as exc:
        raise RowError(f"not a DICOM file: {exc}", file=name) from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError,
            NotImplementedError) as exc:
        raise RowError(f"unreadable DICOM header (truncated or corrupt?): {_brief(exc)}",
                       file=name) from None


def decode_dicom(data: bytes, *, name: str, frame: str = "middle",
                 max_pixels: int = 100_000_000) -> Image.Image:
    """Decode one frame of a DICOM file to an 8-bit L or RGB image; RowError on any failure."""
    with warnings.catch_warnings():
        # pydicom warns about each odd value as it is accessed; a row either decodes or gets
        # a RowError, so the warnings only add noise to a build log.
        warnings.simplefilter("ignore")
        return _decode(data, name=name, frame=frame, max_pixels=max_pixels)


def _decode(data: bytes, *, name: str, frame: str, max_pixels: int) -> Image.Image:
    ds = read_dataset(data, name=name)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise RowError(_why_no_pixels(ds), file=name)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        n_frames = int(ds.get("NumberOfFrames") or 1)
        spp = int(ds.get("SamplesPerPixel") or 1)
        photometric = str(ds.PhotometricInterpretation).strip().upper()
    except (AttributeError, ValueError, TypeError) as exc:
        raise RowError(f"DICOM image attributes missing or invalid: {_brief(exc)}", file=name) from None
    if rows <= 0 or cols <= 0 or n_frames <= 0:
        raise RowError(f"DICOM declares an empty image ({rows}x{cols}, {n_frames} frames)", file=name)
    if rows * cols > max_pixels:
        raise RowError(f"decompression bomb: {rows * cols} pixels > limit {max_pixels}", file=name)

    index = frame_index(n_frames, frame)
    arr, photometric = _decode_frame(ds, index, photometric, name=name)
    try:
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(arr, _little_endian_luts(ds))
            out = _color_to_8bit(rgb, 16 if rgb.dtype.itemsize > 1 else 8)
        elif spp == 3 or photometric.startswith(("RGB", "YBR")):
            if photometric.startswith("YBR_FULL"):
                arr = convert_color_space(arr, photometric, "RGB")
            out = _color_to_8bit(arr, int(ds.get("BitsStored") or ds.BitsAllocated))
        elif photometric in ("MONOCHROME1", "MONOCHROME2"):
            out = _grey_to_8bit(arr, ds)
            if photometric == "MONOCHROME1":
                out = 255 - out
        else:
            raise RowError(f"unsupported DICOM photometric interpretation {photometric!r}", file=name)
    except RowError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise RowError(f"DICOM LUT/colour transform failed: {_brief(exc)}", file=name) from None
    return Image.fromarray(np.ascontiguousarray(out))  # uint8 (H, W) → L, (H, W, 3) → RGB


# (0028,1201-1204) palette LUT data and (0028,1221-1223) segmented palette LUT data: OW words
_LUT_DATA_TAGS = (0x00281201, 0x00281202, 0x00281203, 0x00281204, 0x00281221, 0x00281222, 0x00281223)


def _little_endian_luts(ds: Dataset) -> Dataset:
    """`ds`, with its palette LUT words in little-endian order when the file is big-endian.

    Why: pydicom keeps OW values as the file's raw bytes, and `apply_color_lut` reads them as
    little-endian whatever the transfer syntax, so an explicit big-endian PALETTE COLOR file got
    entries like 0xFF00 read as 0x00FF, i.e. an all-black image (its little-endian twin was right).
    Only the image-pixel group (0028) is copied; the caller's dataset is left alone. The copy
    says it is little-endian (its own file meta), because `apply_color_lut` unpacks segmented
    LUTs (0028,1221-1223) in the byte order the dataset declares: a copy that declared none
    failed with "Unable to determine the endianness" (pydicom's gdcm-US-ALOKA-16_big.dcm), and
    one that kept the file's big-endian syntax would unpack the swapped words wrongly.
    """
    encoding = getattr(ds, "original_encoding", None)
    little = encoding[1] if encoding and encoding[1] is not None else getattr(ds, "is_little_endian", True)
    if little is not False:
        return ds
    fixed = Dataset()
    fixed.file_meta = FileMetaDataset()
    fixed.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for elem in ds.group_dataset(0x0028):
        fixed.add(elem)
    for tag in _LUT_DATA_TAGS:
        if tag in fixed and isinstance(fixed[tag].value, (bytes, bytearray)):
            words = np.frombuffer(fixed[tag].value, dtype=">u2")
            fixed.add_new(tag, "OW", words.astype("<u2").tobytes())
    return fixed


def _why_no_pixels(ds: Dataset) -> str:
    """pydicom stops quietly at a cut-off element, so a truncated file looks like one without
    pixels; tell the two apart by whether the header describes an image."""
    if not any(tag.group > 0x0002 for tag in ds.keys()):  # noqa: SIM118 - iterating a Dataset yields elements
        return "DICOM has no data set after its file meta (truncated file?)"
    sop = ds.get("SOPClassUID")
    kind = getattr(sop, "name", None) or "unknown SOP class"
    if "Rows" in ds or "Image" in kind:
        return f"DICOM has no pixel data although it is an image ({kind}): truncated file?"
    return f"DICOM has no pixel data ({kind}, not an image)"


def _decode_frame(ds: Dataset, index: int, photometric: str, *, name: str) -> tuple[np.ndarray, str]:
    """Decode only frame `index`; returns the array and the photometric it is now in.

    `raw=True` keeps pydicom from converting colour behind our back, and the decoder reports
    what it did (e.g. YBR_FULL_422 de-subsampled to YBR_FULL, or J2K's YBR_ICT already RGB).
    """
    tsyntax = _transfer_syntax(ds)
    if tsyntax is None:
        raise RowError("DICOM has no transfer syntax (file meta missing)", file=name)
    try:
        arr, meta = get_decoder(tsyntax).as_array(ds, index=index, raw=True)
    except NotImplementedError as exc:
        raise RowError(f"no decoder for DICOM transfer syntax {tsyntax} ({tsyntax.name}): "
                       f"{_brief(exc)}", file=name) from None
    except Exception as exc:  # noqa: BLE001 - codec plugins raise anything; the row is what's lost
        raise RowError(f"DICOM pixel data cannot be decoded (truncated or corrupt?): "
                       f"{_brief(exc)}", file=name) from None
    return arr, str(meta.get("photometric_interpretation") or photometric).upper()


def _transfer_syntax(ds: Dataset) -> UID | None:
    """The file's transfer syntax; for a preamble-less file, the encoding pydicom detected.

    Such files (ACR-NEMA style) can only be uncompressed, so the detected VR and byte order
    are the whole answer.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return UID(meta.TransferSyntaxUID)
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if little is None:
        return None
    if implicit:
        return ImplicitVRLittleEndian if little else None
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _grey_to_8bit(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT, then VOI (LUT or first window), then the VOI output range to 0..255.

    A VOI the file gets wrong (width < 1, an unsupported LUT depth) falls back to min..max, as
    viewers do: a bad display hint is no reason to lose the picture.
    """
    values = apply_modality_lut(arr, ds)
    try:
        voi = _apply_voi(values, ds)
    except (ValueError, TypeError, NotImplementedError, AttributeError, IndexError, KeyError):
        voi = None
    if voi is not None:
        windowed, lo, hi = voi
        if hi != lo:
            return to_uint8(windowed, lo, hi)
    values = np.asarray(values, dtype=np.float64)
    return to_uint8(values, float(values.min()), float(values.max()))


def _apply_voi(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float] | None:
    """The VOI-transformed frame and the transform's output for the lowest/highest input.

    The range comes from pushing the input extremes through the same pydicom call, so it is
    whatever pydicom's windowing produces for this file; a descending VOI LUT gives lo > hi and
    stays descending after scaling.
    """
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        entries, first = int(seq[0].LUTDescriptor[0]) or 2**16, int(seq[0].LUTDescriptor[1])
        probes = np.array([first, first + entries - 1], dtype=np.int64)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        probes = np.array([-1e12, 1e12])
    else:
        return None
    lo, hi = apply_voi_lut(probes, ds, index=0).astype(np.float64)
    return apply_voi_lut(values, ds, index=0), float(lo), float(hi)


def to_uint8(values: Any, lo: float, hi: float) -> np.ndarray:
    """Map lo..hi linearly onto 0..255 (lo > hi flips), rounding and clipping outside values."""
    if hi == lo:
        return np.zeros(np.shape(values), dtype=np.uint8)
    out = np.subtract(values, lo, dtype=np.float64)  # one new array, then in place
    out *= 255.0 / (hi - lo)
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _color_to_8bit(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    shift = max(bits - 8, 0)
    return np.clip(arr.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


def _brief(exc: BaseException) -> str:
    """One line, bounded: codec errors can be multi-line lists of every plugin's complaint."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}"[:400]
