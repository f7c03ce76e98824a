"""The JPEG fast path (`medmix.imaging.jpeg`) and the pHash on pixel arrays (`medmix.imaging.phash`).

The fast path is only an accelerator: for every JPEG and every policy it must give exactly what
the Pillow path gives (bytes, size, pixel hash, pHash), take the plain files itself, and hand
everything else (EXIF rotation, CMYK, truncation, corrupt data) to the Pillow path.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
from PIL import Image
from test_imaging import encode, hopper_bytes, icc_profile, insert_after_soi, jpeg_markers, jpeg_segment, picture

import medmix.imaging.canonical
from medmix.core.errors import RowError
from medmix.imaging import jpeg
from medmix.imaging.canonical import ImagePolicy, normalize_image, pixel_hash
from medmix.imaging.phash import _lanczos, dct_bits, phash64, thumbnail

POLICIES = {
    "keep": ImagePolicy(),
    "jpeg": ImagePolicy(encode="jpeg"),
    "png": ImagePolicy(encode="png"),
    "keep, max_side 40": ImagePolicy(max_side=40),
    "jpeg q75": ImagePolicy(encode="jpeg", jpeg_quality=75),
}


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def real_jpegs() -> dict[str, bytes]:
    """Camera and scanner JPEGs nobody here wrote: matplotlib's photograph (with a comment
    segment) and the two scikit-learn sample photographs."""
    folder = Path(sklearn.datasets.__file__).parent / "images"
    return {"grace_hopper": hopper_bytes(), **{p.stem: p.read_bytes() for p in sorted(folder.glob("*.jpg"))}}


def synthetic_jpegs() -> dict[str, bytes]:
    card, odd = picture(97, 61), picture(17, 9)
    return {
        "baseline 4:2:0": encode(card, "JPEG", quality=90),
        "progressive": encode(card, "JPEG", quality=80, progressive=True),
        "4:4:4": encode(card, "JPEG", subsampling=0),
        "4:2:2": encode(card, "JPEG", subsampling=1),
        "optimized q40": encode(card, "JPEG", quality=40, optimize=True),
        "restart markers": encode(card, "JPEG", restart_marker_blocks=1),
        "grey": encode(card.convert("L"), "JPEG"),
        "grey progressive": encode(odd.convert("L"), "JPEG", progressive=True),
        "1x1": encode(picture(1, 1), "JPEG"),
        "17x9": encode(odd, "JPEG"),
        "ICC profile": encode(card, "JPEG", icc_profile=icc_profile()),
        "EXIF upright": encode(card, "JPEG", exif=exif_orientation(1)),
        "EXIF rotated": encode(card, "JPEG", exif=exif_orientation(6)),
        "comment + trailer": insert_after_soi(encode(card, "JPEG"), jpeg_segment(0xFE, b"Jane Doe")) + b"TRAILER",
        "CMYK": encode(card.convert("CMYK"), "JPEG"),
        "corrupt scan": _corrupt(encode(card, "JPEG")),
        "early EOI": _early_eoi(encode(card, "JPEG")),
    }


def _corrupt(data: bytes) -> bytes:
    """Entropy-coded bytes overwritten in the middle of the scan: both decoders make the same garbage."""
    mid = len(data) // 2
    return data[:mid] + bytes([0x12, 0x34, 0x56, 0x78] * 8) + data[mid + 32:]


def _early_eoi(data: bytes) -> bytes:
    """The scan cut in half and closed with EOI: libjpeg warns "premature end", Pillow pads with grey."""
    return data[: len(data) // 2] + b"\xff\xd9"


ALL = {**real_jpegs(), **synthetic_jpegs()}


def pillow_path(data: bytes, policy: ImagePolicy, monkeypatch: pytest.MonkeyPatch):
    with monkeypatch.context() as m:
        m.setattr(medmix.imaging.canonical, "_plain_jpeg", lambda *a: None)
        try:
            return normalize_image(data, name="x.jpg", policy=policy)
        except RowError as exc:
            return str(exc)


def normalized(data: bytes, policy: ImagePolicy):
    try:
        return normalize_image(data, name="x.jpg", policy=policy)
    except RowError as exc:
        return str(exc)


@pytest.mark.parametrize("policy", POLICIES, ids=str)
@pytest.mark.parametrize("name", ALL, ids=str)
def test_fast_path_gives_what_the_pillow_path_gives(name: str, policy: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = ALL[name]
    assert normalized(data, POLICIES[policy]) == pillow_path(data, POLICIES[policy], monkeypatch)


def test_plain_jpegs_take_the_fast_path_and_the_rest_the_pillow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = medmix.imaging.canonical._decode_raster
    monkeypatch.setattr(medmix.imaging.canonical, "_decode_raster",
                        lambda data, **kw: calls.append(kw["name"]) or real(data, **kw))
    plain = ["grace_hopper", "china", "flower", "baseline 4:2:0", "progressive", "4:4:4", "grey", "1x1",
             "ICC profile", "EXIF upright", "comment + trailer"]
    for name in plain:
        for policy in ("keep", "jpeg", "png"):
            normalize_image(ALL[name], name=name, policy=POLICIES[policy])
    assert calls == []
    for name in ("EXIF rotated", "CMYK", "early EOI"):
        normalize_image(ALL[name], name=name)
    normalize_image(ALL["baseline 4:2:0"], name="big", policy=ImagePolicy(max_side=40))  # needs a resize
    assert calls == ["EXIF rotated", "CMYK", "early EOI", "big"]


def test_rotated_and_truncated_jpegs_keep_their_pillow_path_meaning() -> None:
    rotated = normalize_image(ALL["EXIF rotated"], name="r.jpg")
    assert (rotated.width, rotated.height) == (61, 97)  # turned upright
    data = ALL["baseline 4:2:0"]
    for policy in ("keep", "jpeg"):
        with pytest.raises(RowError, match="truncated JPEG") as err:
            normalize_image(data[: len(data) * 2 // 3], name="cut.jpg", policy=POLICIES[policy])
        assert err.value.file == "cut.jpg"


def test_decode_matches_pillow_pixel_for_pixel() -> None:
    for name, data in ALL.items():
        if name in ("CMYK", "early EOI"):
            continue
        ref = Image.open(io.BytesIO(data))
        header = jpeg.plain_header(data)
        assert header == (ref.width, ref.height, ref.mode), name
        pixels = jpeg.decode(data, header[2])
        assert pixels.flags.c_contiguous and pixels.dtype == np.uint8
        assert np.array_equal(pixels, np.asarray(ref)), name
        assert pixel_hash(pixels) == pixel_hash(ref), name
    assert jpeg.plain_header(ALL["CMYK"]) is None
    assert jpeg.plain_header(b"\xff\xd8\xff\xe0 not really") is None
    assert jpeg.decode(ALL["early EOI"], "RGB") is None  # a libjpeg warning: Pillow decides


def test_encode_writes_only_the_image_and_keeps_grey_grey() -> None:
    card = np.asarray(picture(50, 30))
    out = jpeg.encode(card, 90)
    assert set(jpeg_markers(out)) <= {0xE0, 0xDB, 0xC0, 0xC4}  # JFIF, tables, baseline frame
    assert medmix.imaging.canonical._walk_jpeg(out, "x") == (out, False)  # the metadata whitelist drops nothing
    back = Image.open(io.BytesIO(out))
    assert back.mode == "RGB" and back.size == (50, 30)
    pillow = np.asarray(Image.open(io.BytesIO(encode(picture(50, 30), "JPEG", quality=90))))
    error = np.abs(np.asarray(back).astype(int) - card).mean()
    assert error <= np.abs(pillow.astype(int) - card).mean() + 0.5  # as faithful as Pillow's encoder
    grey = Image.open(io.BytesIO(jpeg.encode(np.asarray(picture(50, 30, "L")), 90)))
    assert grey.mode == "L"
    assert jpeg.encode(card, 90) == out  # deterministic


def test_same_picture_as_jpeg_and_as_png_has_one_identity() -> None:
    """The JPEG (fast path) and a PNG of its decoded pixels (Pillow path) are one picture."""
    for data in real_jpegs().values():
        png = encode(Image.open(io.BytesIO(data)), "PNG")
        a, b = normalize_image(data, name="a.jpg"), normalize_image(png, name="b.png")
        assert (a.pixel_hash, a.phash) == (b.pixel_hash, b.phash)


# -- pHash on pixel arrays --------------------------------------------------------------------


def reference_thumbnail(pixels: np.ndarray) -> np.ndarray:
    """`phash.thumbnail` written the slow, obvious way: per-box means with Pillow's partial last
    box, luma, then a Lanczos-3 resample with weights computed pixel by pixel."""
    pixels = pixels.astype(np.float64)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width = pixels.shape[:2]
    f = min(height, width) // 64
    if f >= 2:
        ys, xs = range(0, height, f), range(0, width, f)
        pixels = np.array([[pixels[y:y + f, x:x + f].reshape(-1, pixels.shape[2]).mean(axis=0) for x in xs]
                           for y in ys])
    gray = pixels @ [0.299, 0.587, 0.114] if pixels.shape[2] == 3 else pixels[:, :, 0]

    def weights(size: int) -> np.ndarray:
        scale = size / 32
        out = np.zeros((32, size))
        for i in range(32):
            center = (i + 0.5) * scale
            for j in range(size):
                x = (j + 0.5 - center) / max(scale, 1.0)
                out[i, j] = np.sinc(x) * np.sinc(x / 3) if abs(x) < 3 else 0.0
            out[i] /= out[i].sum()
        return out

    return weights(gray.shape[0]) @ gray @ weights(gray.shape[1]).T


@pytest.mark.parametrize("shape", [(200, 131, 3), (131, 200), (384, 384, 3), (40, 25, 3), (700, 260)])
def test_phash_thumbnail_matches_the_obvious_computation(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    smooth = np.cumsum(np.cumsum(rng.normal(0, 1, shape), axis=0), axis=1)  # structure, not noise
    pixels = np.ascontiguousarray(np.interp(smooth, (smooth.min(), smooth.max()), (0, 255)).astype(np.uint8))
    assert np.allclose(thumbnail(pixels), reference_thumbnail(pixels), atol=1e-9)
    assert phash64(pixels) == dct_bits(reference_thumbnail(pixels))
    assert phash64(pixels) == phash64(Image.fromarray(pixels))  # array or Pillow image: one hash


def test_phash_of_flat_pictures_is_the_same_everywhere() -> None:
    """Flat pictures put every AC coefficient at zero, a tie with the median: rounding decides it
    the same way on every machine (only the DC bit, and not even that for black)."""
    for size, value in (((64, 64), 0), ((300, 200), 255), ((17, 3), 128), ((1000, 130), 7)):
        expected = 1 << 63 if value else 0
        assert phash64(np.full(size, value, np.uint8)) == expected
        assert phash64(np.full((*size, 3), value, np.uint8)) == expected


def test_lanczos_rows_are_normalized_and_cached() -> None:
    for size in (5, 32, 64, 127, 1000):
        weights = _lanczos(size)
        assert weights.shape == (32, size) and np.allclose(weights.sum(axis=1), 1.0)
    assert _lanczos(64) is _lanczos(64)
