"""DICOM decoding through `normalize_image`, on the real test files pydicom ships.

Only files present offline in the installed pydicom are used (`download=False`); the ones
pydicom fetches on demand are never asked for.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from medmix.core.errors import RowError
from medmix.imaging.canonical import ImagePolicy, normalize_image
from medmix.imaging.dicom import frame_index


def path(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    assert found, f"pydicom test file {name} is not installed"
    return Path(found)


def raw(name: str) -> bytes:
    return path(name).read_bytes()


def dataset(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path(name))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def normalize(name: str, **policy) -> tuple:
    out = normalize_image(raw(name), name=name, policy=ImagePolicy(**policy))
    return out, pixels(out.data)


# The CR images of pydicom's DICOMDIR test set: real MONOCHROME1 with rescale and a window.
CR_MONOCHROME1 = "dicomdirtests/77654033/CR1/6154"


@pytest.mark.parametrize("name, size, mode", [
    ("CT_small.dcm", (128, 128), "L"),                   # explicit VR LE, rescale to HU
    ("MR_small.dcm", (64, 64), "L"),                     # window center/width
    ("JPEG2000.dcm", (256, 1024), "L"),                  # JPEG 2000
    ("JPEGLSNearLossless_16.dcm", (10, 50), "L"),        # JPEG-LS near-lossless, 16-bit
    ("MR_small_RLE.dcm", (64, 64), "L"),                 # RLE lossless
    ("SC_rgb_jpeg_dcmtk.dcm", (100, 100), "RGB"),        # JPEG baseline, YBR_FULL
    ("examples_ybr_color.dcm", (320, 240), "RGB"),       # JPEG, YBR_FULL_422, 30 frames
    ("examples_jpeg2k.dcm", (640, 480), "RGB"),          # J2K with YBR_RCT
    ("examples_palette.dcm", (800, 350), "RGB"),         # PALETTE COLOR
    ("SC_rgb_rle_16bit.dcm", (100, 100), "RGB"),         # 16-bit colour
    ("rtdose.dcm", (10, 10), "L"),                       # 32-bit, 15 frames
    ("liver_1frame.dcm", (512, 512), "L"),               # 1 bit per pixel
    (CR_MONOCHROME1, (16, 16), "L"),
])
def test_real_files_decode_to_expected_size_and_mode(name, size, mode):
    out, arr = normalize(name)
    img = Image.open(io.BytesIO(out.data))
    assert (out.format, img.format) == ("png", "PNG")
    assert img.mode == mode
    assert (out.width, out.height) == img.size == size
    assert arr.max() > arr.min(), "a real image should not come out flat"


def test_one_picture_in_eight_transfer_syntaxes_hashes_the_same():
    """Native LE/BE, implicit VR, RLE, JPEG-LS, J2K lossless: same pixels, same sha256."""
    family = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
              "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
              "MR_small_expb.dcm", "MR_small_padded.dcm"]
    hashes = {normalize(name)[0].pixel_hash for name in family}
    assert len(hashes) == 1


def test_8_16_and_32_bit_colour_keep_the_same_8_bit_picture():
    hashes = {normalize(n)[0].pixel_hash for n in ("SC_rgb_rle.dcm", "SC_rgb_rle_16bit.dcm", "SC_rgb_rle_32bit.dcm")}
    assert len(hashes) == 1


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_422_uncompressed.dcm",
                                  "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_ybr_is_converted_to_rgb(name):
    """Same test pattern stored as YCbCr: close to the lossless RGB original (JPEG-lossy close)."""
    reference = normalize("SC_rgb_rle.dcm")[1].astype(int)
    arr = normalize(name)[1].astype(int)
    assert np.abs(arr - reference).mean() < 4  # unconverted YCbCr would be off by ~100
    assert tuple(arr[0, 0]) == pytest.approx((255, 0, 0), abs=3)  # the pattern starts red


def test_palette_color_goes_through_its_lut():
    ds = dataset("examples_palette.dcm")
    index = ds.pixel_array
    arr = normalize("examples_palette.dcm")[1]
    # The LUT read by hand: 16-bit little-endian entries, indexed from the descriptor's first value.
    red = np.frombuffer(ds.RedPaletteColorLookupTableData, dtype="<u2")
    first = ds.RedPaletteColorLookupTableDescriptor[1]
    expected = red[np.clip(index.astype(int) - first, 0, len(red) - 1)] >> 8
    assert np.array_equal(arr[..., 0], expected)
    assert not np.array_equal(arr[..., 0], arr[..., 1])  # really colour, not grey


def test_big_endian_palette_color_renders_like_its_little_endian_twin():
    """pydicom's palette example rewritten as explicit VR big endian (LUT words swapped, as the
    standard stores OW in big-endian files): the same picture, not an all-black one."""
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRBigEndian

    ds = dataset("examples_palette.dcm")
    words = [ds[f"{colour}PaletteColorLookupTableData"] for colour in ("Red", "Green", "Blue")]
    if ds["PixelData"].VR == "OW":  # 8-bit pixels in OW words: each pair swaps too
        words.append(ds["PixelData"])
    for elem in words:
        elem.value = np.frombuffer(elem.value, dtype="<u2").astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    twin = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    assert twin.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert np.array_equal(twin.pixel_array, dataset("examples_palette.dcm").pixel_array)  # a faithful conversion
    out = normalize_image(buf.getvalue(), name="palette_be.dcm", policy=ImagePolicy())
    big, little = pixels(out.data), normalize("examples_palette.dcm")[1]
    assert big.max() > 0 and np.array_equal(big, little)


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1, written out independently of pydicom, to 0..1."""
    y = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(y, 0.0, 1.0)


def test_window_center_width_is_applied():
    ds = dataset("MR_small.dcm")
    expected = np.rint(linear_window(ds.pixel_array.astype(float), 600, 1600) * 255)
    arr = normalize("MR_small.dcm")[1].astype(int)
    assert np.abs(arr - expected).max() <= 1


def test_rescale_without_window_uses_the_frame_min_max():
    ds = dataset("CT_small.dcm")
    assert "WindowCenter" not in ds and ds.RescaleIntercept == -1024
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.rint((hu - hu.min()) / (hu.max() - hu.min()) * 255)
    arr = normalize("CT_small.dcm")[1].astype(int)
    assert np.abs(arr - expected).max() <= 1
    assert (arr.min(), arr.max()) == (0, 255)


def test_monochrome1_is_inverted_after_rescale_and_window():
    ds = dataset(CR_MONOCHROME1)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    stored = ds.pixel_array.astype(float)
    value = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = 255 - np.rint(linear_window(value, float(ds.WindowCenter), float(ds.WindowWidth)) * 255)
    arr = normalize(CR_MONOCHROME1)[1].astype(int)
    assert np.abs(arr - expected).max() <= 1
    # The relationship itself: a higher stored value is never brighter in the output.
    order = np.argsort(stored, axis=None, kind="stable")
    assert np.all(np.diff(arr.ravel()[order]) <= 0)
    assert np.corrcoef(stored.ravel(), arr.ravel())[0, 1] < -0.99


def test_multiframe_middle_by_default_and_first_on_request():
    ds = dataset("rtdose.dcm")
    frames = ds.pixel_array.astype(float)
    assert len(frames) == 15

    def minmax(frame: np.ndarray) -> np.ndarray:
        return np.rint((frame - frame.min()) / (frame.max() - frame.min()) * 255)

    middle = normalize("rtdose.dcm")[1]
    first = normalize("rtdose.dcm", frame="first")[1]
    assert np.abs(middle - minmax(frames[7])).max() <= 1
    assert np.abs(first - minmax(frames[0])).max() <= 1
    assert not np.array_equal(middle, first)


def test_frame_index_rule():
    assert [frame_index(n, "middle") for n in (1, 2, 3, 15, 30)] == [0, 1, 1, 7, 15]
    assert frame_index(30, "first") == 0


@pytest.mark.parametrize("name, keep", [
    ("CT_small.dcm", 20_000), ("CT_small.dcm", 1_000), ("MR_small.dcm", 9_000),
    ("JPEG2000.dcm", 2_000), ("MR_small_RLE.dcm", 6_000), ("SC_rgb_jpeg_dcmtk.dcm", 2_500),
    ("examples_ybr_color.dcm", 100_000), ("CT_small.dcm", 300),
])
def test_truncated_dicom_is_a_row_error(name, keep):
    data = raw(name)
    assert keep < len(data)
    with pytest.raises(RowError) as err:
        normalize_image(data[:keep], name=name)
    assert err.value.file == name
    assert "DICOM" in err.value.reason and "truncated" in err.value.reason


def test_transfer_syntax_no_installed_plugin_can_decode_is_a_row_error():
    """12-bit JPEG extended: libjpeg rejects this file and Pillow lacks 12-bit; say so."""
    with pytest.raises(RowError, match=r"cannot be decoded.*all available plugins.*12-bit"):
        normalize_image(raw("JPEG-lossy.dcm"), name="JPEG-lossy.dcm")


def test_pydicoms_own_truncated_file_is_a_row_error():
    with pytest.raises(RowError, match="pixel data cannot be decoded.*less than expected"):
        normalize_image(raw("MR_truncated.dcm"), name="MR_truncated.dcm")


def test_dicom_without_pixel_data_is_a_row_error():
    with pytest.raises(RowError, match=r"DICOM has no pixel data \(RT Plan Storage, not an image\)"):
        normalize_image(raw("rtplan.dcm"), name="rtplan.dcm")
    ds = dataset("CT_small.dcm")
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(RowError, match=r"DICOM has no pixel data although it is an image \(CT Image") as err:
        normalize_image(buf.getvalue(), name="ct_nopixels.dcm")
    assert err.value.file == "ct_nopixels.dcm"


def test_invalid_header_value_is_a_row_error():
    with pytest.raises(RowError, match="'1A'"):  # NumberOfFrames "1A" in pydicom's badVR.dcm
        normalize_image(raw("badVR.dcm"), name="badVR.dcm")


def test_oversized_dicom_is_refused_before_decoding():
    with pytest.raises(RowError, match="decompression bomb: 16384 pixels > limit 1000"):
        normalize_image(raw("CT_small.dcm"), name="ct.dcm", policy=ImagePolicy(max_pixels=1000))


def test_preambleless_dcm_is_read_by_name():
    """ACR-NEMA style: no preamble, no "DICM", no file meta; recognised by the .dcm name."""
    for name in ("MR_small_implicit.dcm", "MR_small_expb.dcm"):
        ds = dataset(name)
        fp = DicomBytesIO()
        fp.is_implicit_VR, fp.is_little_endian = ds.original_encoding
        write_dataset(fp, ds)
        bare = fp.getvalue()
        assert bare[128:132] != b"DICM"
        assert normalize_image(bare, name="bare.dcm").pixel_hash == normalize(name)[0].pixel_hash
        with pytest.raises(RowError, match="not an image"):  # without the name it is just bytes
            normalize_image(bare, name="bare.bin")


def test_garbage_named_dcm_is_a_row_error_and_a_mislabelled_jpeg_still_decodes():
    with pytest.raises(RowError) as err:
        normalize_image(b"\x00\x01garbage" * 50, name="junk.dcm")
    assert err.value.file == "junk.dcm"
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 200, 30)).save(buf, "JPEG")
    out = normalize_image(buf.getvalue(), name="actually_a_jpeg.dcm")
    assert (out.width, out.height, out.format) == (8, 6, "jpeg")


def header_strings(ds: pydicom.Dataset) -> set[str]:
    """Every text value in the header, nested sequences included (long enough to be unique)."""
    found: set[str] = set()
    for elem in ds.iterall():
        if elem.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "UN") or elem.value is None:
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        for value in values:
            text = str(value).strip()
            if len(text) >= 6:
                found.add(text)
    return found


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", CR_MONOCHROME1,
                                  "examples_ybr_color.dcm", "JPEG2000.dcm"])
@pytest.mark.parametrize("encode", ["keep", "png", "jpeg"])
def test_no_header_value_reaches_the_output(name, encode):
    ds = dataset(name)
    strings = header_strings(ds)
    identifying = [str(ds.get(k)) for k in ("PatientName", "PatientID", "StudyDate", "InstitutionName",
                                             "StudyInstanceUID") if ds.get(k)]
    assert identifying and strings
    out = normalize_image(raw(name), name=name, policy=ImagePolicy(encode=encode)).data
    for text in strings | {s for s in identifying if len(s) >= 4}:
        for encoding in ("ascii", "utf-16-le", "utf-16-be"):
            try:
                needle = text.encode(encoding)
            except UnicodeEncodeError:
                continue
            assert needle not in out, f"{text!r} from the header is in the output"
    img = Image.open(io.BytesIO(out))
    assert not (set(img.info) - {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi"})
