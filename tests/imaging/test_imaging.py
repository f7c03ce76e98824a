"""Raster normalization, metadata removal, failure modes and perceptual hashing.

Pictures are generated here (small, deterministic), except where a real one matters: the
photograph matplotlib ships (grace_hopper.jpg, which carries a JPEG comment), pydicom's real
ICC profile, and pydicom's CT/MR slices for the perceptual-hash checks.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import imagehash
import matplotlib.cbook
import numpy as np
import pydicom.data
import pytest
import xxhash
from PIL import Image, ImageEnhance, ImageFile

from medmix.core.errors import MedmixError, RowError
from medmix.imaging.canonical import ImagePolicy, NormalizedImage, normalize_image, pixel_hash
from medmix.imaging.phash import dct_bits, phash64
from medmix.mix.dedup import hamming

# -- helpers ----------------------------------------------------------------------------------

SECRETS = [b"Jane Doe", b"MRN-4711-0815", b"SecretCam", b"St. Elsewhere", b"TRAILER-PHI",
           b"xmp-patient-id", b"iptc-caption-phi", b"png-text-phi"]
# pixel_hash of the two pictures in test_pixel_hash_definition_is_pinned (schema 2.0 definition)
PINNED_PIXEL_HASHES = ("bd5fcf109b56932d618b5e5f5e16c3d9", "b052a0b63c02fb89922c8af5c96adadd")
JPEG_INFO_OK = {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "adobe", "adobe_transform"}


def picture(width: int = 96, height: int = 64, mode: str = "RGB") -> Image.Image:
    """A deterministic test card: gradients plus an off-centre block, so orientation shows."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x * y) % 256], -1)
    rgb[: height // 4, : width // 4] = (250, 20, 20)
    img = Image.fromarray(rgb.astype(np.uint8))
    return img if mode == "RGB" else img.convert(mode)


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def hopper_bytes() -> bytes:
    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()


def icc_profile() -> bytes:
    return (Path(pydicom.data.__file__).parent / "test_files" / "crayons.icc").read_bytes()


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def insert_after_soi(jpeg: bytes, *segments: bytes) -> bytes:
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def jpeg_markers(data: bytes) -> list[int]:
    """Markers up to the first scan, and what follows the last EOI (written independently)."""
    assert data[:2] == b"\xff\xd8"
    markers, pos = [], 2
    while data[pos + 1] != 0xDA:
        marker = data[pos + 1]
        markers.append(marker)
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return markers


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        chunks.append(data[pos + 4:pos + 8])
        pos += 12 + length
    assert pos == len(data), "bytes after IEND"
    return chunks


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def assert_clean(out: NormalizedImage) -> None:
    """No secret string, no metadata structure, nothing after the end marker."""
    for secret in SECRETS:
        assert secret not in out.data
    img = decoded(out.data)
    assert not img.getexif()
    if out.format == "jpeg":
        assert out.data.endswith(b"\xff\xd9")
        assert set(jpeg_markers(out.data)) <= {0xE0, 0xEE, 0xDB, 0xC4, 0xC0, 0xC1, 0xC2, 0xDD}
        assert set(img.info) <= JPEG_INFO_OK
    else:
        assert set(png_chunks(out.data)) <= {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
        assert not img.info


def pixel_sha(img: Image.Image) -> str:
    """Reference for `pixel_hash`, written differently: one-shot XXH3-128 over numpy's copy of the pixels."""
    header = f"{img.mode} {img.width}x{img.height}\n".encode()
    return xxhash.xxh3_128_hexdigest(header + np.ascontiguousarray(np.asarray(img)).tobytes())


def metadata_jpeg(base: bytes) -> bytes:
    """A JPEG carrying every usual hiding place: EXIF (+GPS), XMP, ICC, IPTC, COM, trailer."""
    img = decoded(base)
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"            # Make
    exif[0x013B] = "Jane Doe"             # Artist
    exif[0x010E] = "MRN-4711-0815"        # ImageDescription
    exif.get_ifd(0x8825)[0x001B] = "St. Elsewhere"  # GPSProcessingMethod
    with_exif = encode(img, "JPEG", quality=95, exif=exif, icc_profile=icc_profile(),
                       comment=b"MRN-4711-0815")
    xmp = jpeg_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>xmp-patient-id</x:xmpmeta>")
    iptc = jpeg_segment(0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x10iptc-caption-phi")
    return insert_after_soi(with_exif, xmp, iptc) + b"TRAILER-PHI" * 10


# -- formats, hashing, keep -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_same_picture_in_lossless_formats_hashes_the_same(mode):
    img = picture(mode=mode)
    variants = [encode(img, "PNG"), encode(img, "PNG", compress_level=1), encode(img, "BMP"),
                encode(img, "TIFF"), encode(img, "TIFF", compression="tiff_lzw")]
    if mode == "RGB":  # WebP has no grayscale mode
        variants.append(encode(img, "WEBP", lossless=True))
    outs = [normalize_image(v, name=f"v{i}") for i, v in enumerate(variants)]
    assert {o.pixel_hash for o in outs} == {pixel_sha(img)}
    assert {o.phash for o in outs} == {phash64(img)}
    assert all((o.width, o.height) == img.size for o in outs)


def test_pixel_hash_definition_is_pinned():
    """The stored identity must not drift with a library upgrade: two tiny pictures, pinned values."""
    rgb = Image.frombytes("RGB", (2, 1), bytes([255, 0, 0, 0, 0, 255]))
    gray = Image.frombytes("L", (1, 2), bytes([0, 200]))
    assert pixel_hash(rgb) == xxhash.xxh3_128_hexdigest(b"RGB 2x1\n\xff\x00\x00\x00\x00\xff")
    assert pixel_hash(gray) == xxhash.xxh3_128_hexdigest(b"L 1x2\n\x00\xc8")
    assert (pixel_hash(rgb), pixel_hash(gray)) == PINNED_PIXEL_HASHES
    assert len(pixel_hash(rgb)) == 32


def test_pixel_hash_is_deterministic_and_sees_every_pixel_mode_and_shape():
    img = picture()
    assert pixel_hash(img) == pixel_hash(img.copy()) == pixel_sha(img)
    changed = img.copy()
    changed.putpixel((img.width - 1, img.height - 1), (1, 2, 3))
    assert pixel_hash(changed) != pixel_hash(img)
    flat = Image.new("L", (6, 4), 9)
    assert len({pixel_hash(flat), pixel_hash(Image.new("L", (4, 6), 9)), pixel_hash(Image.new("L", (24, 1), 9))}) == 3
    assert pixel_hash(Image.new("RGB", (2, 2), (9, 9, 9))) != pixel_hash(Image.new("L", (2, 2), 9))


def test_pixel_hash_is_over_decoded_pixels_and_matches_the_output():
    out = normalize_image(encode(picture(), "BMP"), name="a.bmp")
    assert out.format == "png"
    assert out.pixel_hash == pixel_sha(decoded(out.data))


def test_reencoding_the_output_losslessly_keeps_the_hash():
    first = normalize_image(encode(picture(), "PNG"), name="a.png")
    again = normalize_image(encode(decoded(first.data), "TIFF"), name="a.tif")
    assert again.pixel_hash == first.pixel_hash and again.phash == first.phash


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_keep_passes_clean_jpeg_and_png_bytes_through_untouched(fmt, mode):
    data = encode(picture(mode=mode), fmt)
    out = normalize_image(data, name="clean")
    assert out.data == data
    assert out.format == fmt.lower()
    assert out.pixel_hash == pixel_sha(decoded(data))


def test_keep_chooses_jpeg_for_lossy_sources_and_png_for_lossless():
    img = picture()
    assert normalize_image(encode(img, "WEBP", quality=80), name="a.webp").format == "jpeg"
    assert normalize_image(encode(img, "WEBP", lossless=True), name="b.webp").format == "png"
    assert normalize_image(encode(img, "BMP"), name="c.bmp").format == "png"
    assert normalize_image(encode(img, "GIF"), name="d.gif").format == "png"
    resized = normalize_image(encode(img, "JPEG"), name="e.jpg", policy=ImagePolicy(max_side=32))
    assert resized.format == "jpeg" and (resized.width, resized.height) == (32, 21)


@pytest.mark.parametrize("encode_to", ["png", "jpeg"])
def test_explicit_encoding_always_reencodes(encode_to):
    for data in (encode(picture(), "JPEG", quality=75), encode(picture(), "PNG", compress_level=1)):
        out = normalize_image(data, name="x", policy=ImagePolicy(encode=encode_to, jpeg_quality=80))
        assert out.format == encode_to
        assert decoded(out.data).format == encode_to.upper()
        assert out.data != data  # written by medmix, not passed through


def test_jpeg_quality_is_used():
    data = encode(picture(256, 256), "PNG")
    low = normalize_image(data, name="x", policy=ImagePolicy(encode="jpeg", jpeg_quality=20))
    high = normalize_image(data, name="x", policy=ImagePolicy(encode="jpeg", jpeg_quality=95))
    assert len(low.data) < len(high.data)


def test_deterministic_bytes_and_hashes():
    sources = [hopper_bytes(), encode(picture(), "PNG"), encode(picture(), "GIF"),
               metadata_jpeg(encode(picture(), "JPEG"))]
    for data in sources:
        for policy in (ImagePolicy(), ImagePolicy(encode="png"), ImagePolicy(encode="jpeg", max_side=50)):
            a = normalize_image(data, name="x", policy=policy)
            b = normalize_image(bytes(data), name="x", policy=policy)
            assert a == b


# -- metadata --------------------------------------------------------------------------------


def test_metadata_jpeg_fixture_really_carries_the_secrets():
    data = metadata_jpeg(encode(picture(), "JPEG"))
    for secret in SECRETS[:6]:
        assert secret in data
    img = decoded(data)
    assert img.getexif()[0x013B] == "Jane Doe" and "icc_profile" in img.info and "comment" in img.info


@pytest.mark.parametrize("encode_to", ["keep", "png", "jpeg"])
def test_jpeg_metadata_never_reaches_the_output(encode_to):
    data = metadata_jpeg(encode(picture(), "JPEG"))
    out = normalize_image(data, name="meta.jpg", policy=ImagePolicy(encode=encode_to))
    assert_clean(out)


def test_keep_strips_jpeg_metadata_losslessly():
    """The kept stream decodes to exactly the source's pixels: no generation loss."""
    data = metadata_jpeg(encode(picture(), "JPEG"))
    out = normalize_image(data, name="meta.jpg")
    assert out.format == "jpeg" and len(out.data) < len(data)
    assert decoded(out.data).tobytes() == decoded(data).tobytes()
    assert out.pixel_hash == pixel_sha(decoded(data))


def test_real_photo_comment_is_dropped_losslessly():
    data = hopper_bytes()
    assert b"\xff\xfe" in data[:200] and "comment" in decoded(data).info  # a real COM segment
    out = normalize_image(data, name="grace_hopper.jpg")
    assert "comment" not in decoded(out.data).info and 0xFE not in jpeg_markers(out.data)
    assert decoded(out.data).tobytes() == decoded(data).tobytes()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_bytes_after_the_end_marker_are_dropped(fmt):
    """Appending a file after EOI/IEND is a classic way to smuggle data past viewers."""
    clean = encode(picture(), fmt)
    out = normalize_image(clean + b"TRAILER-PHI" * 3, name=f"trailer.{fmt}")
    assert out.data == clean


def test_reencoding_writes_no_metadata_even_without_the_final_whitelist(monkeypatch):
    """Two layers guard re-encoded output; this checks the first (never hand Pillow `info`)."""
    import medmix.imaging.canonical

    monkeypatch.setattr(medmix.imaging.canonical, "_strip_metadata", lambda data, fmt, name: None)
    data = metadata_jpeg(encode(picture(), "JPEG"))
    icc_png = encode(picture(), "PNG", icc_profile=icc_profile())
    for source, encode_to in ((data, "jpeg"), (data, "png"), (icc_png, "png")):
        out = normalize_image(source, name="x", policy=ImagePolicy(encode=encode_to))
        assert_clean(out)


def test_jfif_thumbnail_is_removed():
    data = encode(picture(), "JPEG")
    assert data[2:4] == b"\xff\xe0"
    length = struct.unpack(">H", data[4:6])[0]
    thumb = b"THUMB-PHI-XY"  # a 2x2 RGB thumbnail's 12 bytes
    jfif = data[6:6 + 12] + b"\x02\x02" + thumb
    with_thumb = data[:2] + jpeg_segment(0xE0, jfif) + data[4 + length:]
    assert decoded(with_thumb).size == (96, 64)
    out = normalize_image(with_thumb, name="thumb.jpg")
    assert out.data[2:6] == b"\xff\xe0\x00\x10" and thumb not in out.data
    assert decoded(out.data).tobytes() == decoded(with_thumb).tobytes()


@pytest.mark.parametrize("encode_to", ["keep", "png"])
def test_png_metadata_chunks_and_trailer_are_dropped(encode_to):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "png-text-phi")
    info.add_itxt("Patient", "Jane Doe", zip=True)
    exif = Image.Exif()
    exif[0x013B] = "Jane Doe"
    data = encode(picture(), "PNG", pnginfo=info, icc_profile=icc_profile(), exif=exif)
    data += b"TRAILER-PHI"
    assert b"png-text-phi" in data and b"iCCP" in data and b"eXIf" in data
    out = normalize_image(data, name="meta.png", policy=ImagePolicy(encode=encode_to))
    assert out.format == "png"
    assert_clean(out)
    assert decoded(out.data).tobytes() == picture().tobytes()


# -- orientation, modes, frames, size ----------------------------------------------------------


@pytest.mark.parametrize("orientation, transpose", [
    (3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90),
    (2, Image.Transpose.FLIP_LEFT_RIGHT),
])
def test_exif_orientation_is_applied(orientation, transpose):
    img = picture()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(img, "PNG", exif=exif)  # lossless, so the pixels can be compared exactly
    out = normalize_image(data, name="rotated.png")
    assert decoded(out.data).tobytes() == img.transpose(transpose).tobytes()
    assert (out.width, out.height) == img.transpose(transpose).size
    assert_clean(out)


def test_rotated_jpeg_is_reencoded_upright_without_exif():
    img = picture(64, 32)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x013B] = "Jane Doe"
    out = normalize_image(encode(img, "JPEG", exif=exif, quality=95), name="r.jpg")
    assert (out.format, out.width, out.height) == ("jpeg", 32, 64)
    assert_clean(out)
    top_right = np.asarray(decoded(out.data))[2, -3]
    assert top_right[0] > 200 and top_right[1] < 60  # the red corner block, now top-right


def test_l_stays_l_and_colour_becomes_rgb():
    assert decoded(normalize_image(encode(picture(mode="L"), "PNG"), name="l").data).mode == "L"
    for mode, fmt in [("P", "PNG"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("YCbCr", "JPEG"), ("RGB", "GIF")]:
        out = normalize_image(encode(picture(mode=mode), fmt), name=f"{mode}.{fmt}")
        assert decoded(out.data).mode == "RGB", (mode, fmt)


def test_palette_colours_are_kept():
    img = picture().quantize(16)
    out = normalize_image(encode(img, "PNG"), name="p.png")
    assert decoded(out.data).tobytes() == img.convert("RGB").tobytes()


def test_transparency_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)          # fully transparent black → white
    rgba[0, 1] = (255, 0, 0, 128)      # half red → pink
    rgba[0, 2] = (0, 0, 255, 255)      # opaque blue stays
    rgba[1:] = (10, 20, 30, 255)
    out = normalize_image(encode(Image.fromarray(rgba), "PNG"), name="a.png")
    arr = np.asarray(decoded(out.data)).astype(int)
    assert decoded(out.data).mode == "RGB"
    assert tuple(arr[0, 0]) == (255, 255, 255)
    assert tuple(arr[0, 1]) == pytest.approx((255, 127, 127), abs=1)
    assert tuple(arr[0, 2]) == (0, 0, 255)


def test_grey_with_alpha_and_palette_transparency():
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), mode="LA")
    out = normalize_image(encode(la, "PNG"), name="la.png")
    assert decoded(out.data).mode == "L" and np.asarray(decoded(out.data)).tolist() == [[255, 0]]
    gif = Image.new("P", (2, 1))
    gif.putpalette([0, 0, 0, 200, 0, 0])
    gif.putdata([0, 1])
    out = normalize_image(encode(gif, "GIF", transparency=0), name="t.gif")
    assert np.asarray(decoded(out.data)).tolist() == [[[255, 255, 255], [200, 0, 0]]]


@pytest.mark.parametrize("mode, fmt, values", [
    ("I;16", "PNG", np.array([[1000, 2000], [3000, 1500]], dtype=np.uint16)),
    ("F", "TIFF", np.array([[-1.5, 0.0], [2.5, 0.5]], dtype=np.float32)),
    ("I", "TIFF", np.array([[-70000, 0], [70000, 35000]], dtype=np.int32)),
])
def test_high_bit_depth_is_scaled_to_8_bit_by_min_max(mode, fmt, values):
    img = Image.fromarray(values)
    assert img.mode == mode
    out = normalize_image(encode(img, fmt), name=f"deep.{fmt}")
    arr = np.asarray(decoded(out.data)).astype(int)
    expected = np.rint((values - values.min()) / (values.max() - values.min()) * 255)
    assert decoded(out.data).mode == "L" and np.array_equal(arr, expected)


def test_bilevel_becomes_l():
    img = Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1")
    out = normalize_image(encode(img, "PNG"), name="b.png")
    assert decoded(out.data).mode == "L" and np.asarray(decoded(out.data)).tolist() == [[0, 255], [255, 0]]


def frames(colours):
    return [Image.new("RGB", (8, 8), colour) for colour in colours]


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF"])
def test_animated_images_give_the_middle_frame_or_the_first(fmt):
    red, green, blue = frames([(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(red, fmt, save_all=True, append_images=[green, blue], **params)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    middle = normalize_image(data, name=f"anim.{fmt}")
    first = normalize_image(data, name=f"anim.{fmt}", policy=ImagePolicy(frame="first"))
    assert decoded(middle.data).getpixel((4, 4)) == (0, 255, 0)
    assert decoded(first.data).getpixel((4, 4)) == (255, 0, 0)
    for out in (middle, first):
        assert getattr(decoded(out.data), "n_frames", 1) == 1
        assert out.format == "png"


def test_mpo_gives_its_primary_picture_only():
    primary, second = picture(), Image.new("RGB", (96, 64), (0, 0, 255))
    data = encode(primary, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = normalize_image(data, name="stereo.mpo")
    assert out.format == "jpeg" and decoded(out.data).format == "JPEG"
    assert b"MPF\x00" in data and b"MPF\x00" not in out.data
    assert out.data.count(b"\xff\xd8") == 1 and data.count(b"\xff\xd8") == 2  # one picture left
    ref = decoded(data)  # frame 0
    assert decoded(out.data).tobytes() == ref.tobytes()


@pytest.mark.parametrize("size, max_side, expected", [
    ((1000, 500), 256, (256, 128)), ((500, 1000), 256, (128, 256)), ((300, 7), 100, (100, 2)),
    ((5000, 3), 100, (100, 1)), ((200, 100), 200, (200, 100)), ((50, 40), 256, (50, 40)),
])
def test_max_side_downscales_keeping_aspect(size, max_side, expected):
    data = encode(picture(*size), "PNG")
    out = normalize_image(data, name="big.png", policy=ImagePolicy(max_side=max_side))
    assert (out.width, out.height) == expected == decoded(out.data).size
    assert (out.data == data) == (expected == size)  # untouched only when no resize was needed


def test_downscaled_image_stays_the_same_picture():
    img = picture(800, 600)
    out = normalize_image(encode(img, "PNG"), name="x.png", policy=ImagePolicy(max_side=200))
    assert hamming(out.phash, phash64(img)) <= 4


# -- failures ------------------------------------------------------------------------------


def test_truncated_jpeg_is_a_row_error():
    data = hopper_bytes()
    with pytest.raises(RowError, match="truncated JPEG") as err:
        normalize_image(data[: len(data) * 6 // 10], name="cut.jpg")
    assert err.value.file == "cut.jpg"


def jpeg_cut_points(data: bytes) -> dict[str, int]:
    sos = data.index(b"\xff\xda")
    return {"inside a header segment": 30, "at the scan start": sos, "inside scan data": len(data) // 2,
            "just before EOI": len(data) - 2, "inside the EOI marker": len(data) - 1}


@pytest.mark.parametrize("lenient_pillow", [False, True])
def test_truncation_is_caught_even_if_someone_lets_pillow_accept_it(monkeypatch, lenient_pillow):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient_pillow)
    jpeg, png = hopper_bytes(), encode(picture(256, 256), "PNG")
    for cut in jpeg_cut_points(jpeg).values():
        with pytest.raises(RowError, match="truncated JPEG"):
            normalize_image(jpeg[:cut], name="cut.jpg")
    for cut in (20, len(png) // 2, len(png) - 6):
        with pytest.raises(RowError, match="truncated PNG"):
            normalize_image(png[:cut], name="cut.png")


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "GIF", "WEBP"])
def test_truncated_files_of_each_format_are_row_errors(fmt):
    data = encode(picture(128, 128), fmt)
    with pytest.raises(RowError) as err:
        normalize_image(data[: len(data) // 2], name=f"cut.{fmt}")
    assert err.value.file == f"cut.{fmt}"


def png_bomb(width: int, height: int) -> bytes:
    """A ~100-byte PNG that declares width x height 8-bit grey pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + png_chunk(b"IEND", b""))


def test_png_bomb_is_refused():
    data = png_bomb(20_000, 20_000)
    assert len(data) < 200
    with pytest.raises(RowError, match="decompression bomb") as err:
        normalize_image(data, name="bomb.png")
    assert err.value.file == "bomb.png"


def test_bomb_guard_does_not_rely_on_pillows_global(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(RowError, match=r"decompression bomb: 20000x20000 = 400000000 pixels > limit 100000000"):
        normalize_image(png_bomb(20_000, 20_000), name="bomb.png")
    with pytest.raises(RowError, match=r"decompression bomb: 96x64 = 6144 pixels > limit 6000"):
        normalize_image(encode(picture(), "JPEG"), name="x.jpg", policy=ImagePolicy(max_pixels=6000))
    assert normalize_image(encode(picture(), "JPEG"), name="x.jpg", policy=ImagePolicy(max_pixels=6144)).width == 96


@pytest.mark.parametrize("data, pattern", [
    (b"", "empty file"),
    (b"hello, this is text and not an image", "not an image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),  # EPS: never parsed
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "PNG|corrupt"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "JPEG|corrupt"),
])
def test_bad_bytes_are_row_errors(data, pattern):
    with pytest.raises(RowError, match=pattern) as err:
        normalize_image(data, name="bad.bin")
    assert err.value.file == "bad.bin"


def test_corrupt_png_data_is_a_row_error():
    data = bytearray(encode(picture(64, 64), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 20: idat + 60] = b"\xaa" * 40  # garbage inside the zlib stream
    with pytest.raises(RowError, match="PNG") as err:
        normalize_image(bytes(data), name="bad.png")
    assert err.value.file == "bad.png"


# -- policy --------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, field", [
    ({"encode": "webp"}, "encode"), ({"frame": "last"}, "frame"), ({"max_side": 0}, "max_side"),
    ({"jpeg_quality": 101}, "jpeg_quality"), ({"jpeg_quality": 0}, "jpeg_quality"),
    ({"max_pixels": 0}, "max_pixels"), ({"max_side": 12.5}, "max_side"), ({"max_side": True}, "max_side"),
])
def test_bad_policy_is_a_clear_build_error(kwargs, field):
    with pytest.raises(MedmixError, match=field) as err:
        ImagePolicy(**kwargs)
    assert not isinstance(err.value, RowError)


def test_salt_is_json_and_covers_every_field():
    base = ImagePolicy().salt()
    assert json.loads(json.dumps(base)) == base
    for change in ({"max_side": 512}, {"encode": "png"}, {"jpeg_quality": 80}, {"frame": "first"},
                   {"max_pixels": 10}):
        assert ImagePolicy(**change).salt() != base
    assert ImagePolicy().salt() == base


# -- perceptual hash ---------------------------------------------------------------------------


def real_pictures() -> dict[str, Image.Image]:
    pics = {"hopper": decoded(hopper_bytes()).convert("RGB")}
    for name in ("CT_small.dcm", "693_J2KI.dcm", "examples_overlay.dcm", "examples_rgb_color.dcm",
                 "J2K_pixelrep_mismatch.dcm"):
        path = pydicom.data.get_testdata_file(name, download=False)
        pics[name] = decoded(normalize_image(Path(path).read_bytes(), name=name).data)
    return pics


def copies(img: Image.Image) -> dict[str, Image.Image]:
    w, h = img.size
    dx, dy = round(w * 0.02), round(h * 0.02)
    return {
        "half": img.resize((w // 2, h // 2), Image.Resampling.LANCZOS),
        "jpeg70": decoded(encode(img, "JPEG", quality=70)),
        "crop2%": img.crop((dx, dy, w - dx, h - dy)),
        "bright+3%": ImageEnhance.Brightness(img).enhance(1.03),
    }


def test_phash_finds_near_copies_and_separates_distinct_pictures():
    pics = real_pictures()
    hashes = {}
    for name, img in pics.items():
        hashes[name] = phash64(img)
        for kind, copy in copies(img).items():
            assert hamming(hashes[name], phash64(copy)) <= 10, (name, kind)
    names = list(hashes)
    apart = [hamming(hashes[a], hashes[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    assert min(apart) >= 16


def test_phash_matches_imagehash():
    """Same algorithm as the reference library: the DCT stage is bit-for-bit imagehash's on one
    32x32 input; the thumbnail differs only by rounding (medmix keeps floats between steps) and
    the box pre-reduce, which move a couple of bits at most."""
    small = picture(120, 90)
    assert hamming(phash64(small), int(str(imagehash.phash(small)), 16)) <= 2
    thumb = np.asarray(picture(32, 32, "L"))
    assert dct_bits(thumb) == int(str(imagehash.phash(Image.fromarray(thumb))), 16)
    big = decoded(hopper_bytes()).resize((2048, 2400), Image.Resampling.LANCZOS)
    assert hamming(phash64(big), int(str(imagehash.phash(big)), 16)) <= 2


def test_phash_is_64_bit_and_hamming_counts_bits():
    h = phash64(picture())
    assert 0 <= h < 2**64
    assert hamming(0, 2**64 - 1) == 64 and hamming(h, h) == 0 and hamming(0b1011, 0b0001) == 2
    assert 0 <= normalize_image(encode(picture(), "PNG"), name="x").phash < 2**64
