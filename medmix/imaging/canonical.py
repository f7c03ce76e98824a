"""Image normalization: any raster or DICOM in, one clean L/RGB image out, with its hashes.

Every image of every source goes through `normalize_image`, so this is where three promises are
kept for the whole mixture:

* Safety. Output bytes carry pixels and nothing else: no EXIF (GPS, device serials, dates),
  XMP, ICC, PNG text chunks, JPEG comments, trailing bytes after the image, or DICOM header
  values. Patient data hides in exactly those places.
* Comparability. Every image becomes 8-bit L (grayscale stays grayscale) or RGB, upright (EXIF
  orientation applied), transparency composited on white, one frame. `pixel_hash` is taken over
  those decoded pixels, so the same picture stored as PNG in one source and as BMP in another
  hashes the same; `phash` finds near-copies (resized, recompressed, slightly cropped).
* Speed. Each file is decoded exactly once. A JPEG/PNG that needs no pixel change is not
  re-encoded: under `encode="keep"` its own compressed stream is kept and only metadata segments
  are dropped (lossless, no generation loss, and much cheaper than re-encoding). Hashes are
  taken from one (H, W) / (H, W, 3) uint8 array of the pixels: XXH3-128 for identity (an
  exact-duplicate key, not a security boundary: sha256 cost 0.27 ms per 384x384 RGB image
  against 0.02 ms) and the pHash of `medmix.imaging.phash`. The most common input, a plain JPEG that
  needs no change, goes through `medmix.imaging.jpeg` (libjpeg-turbo into that array, no Pillow image
  at all); it gives the bytes and hashes the Pillow path gives for the same file.

Failures raise `RowError` naming the file and the problem; no Pillow/pydicom exception escapes.
"""

from __future__ import annotations

import dataclasses
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from medmix.core.errors import MedmixError, RowError
from medmix.imaging import jpeg
from medmix.imaging.dicom import decode_dicom, frame_index, has_dicom_magic, to_uint8
from medmix.imaging.phash import phash64, pixels_of

__all__ = ["ImagePolicy", "NormalizedImage", "normalize_image", "phash64", "pixel_hash"]

# Bumped whenever the same input + policy would give different output bytes or hashes.
# 2: pixel identity XXH3-128 (was sha256); 3: pHash of the pixel array, JPEGs written by `medmix.imaging.jpeg`
IMAGING_VERSION = "3"

# Pillow plugins we let parse untrusted bytes. Others (EPS runs Ghostscript, PSD, ICO, ...)
# are refused: a medical mixture has no use for them and each parser is attack surface.
RASTER_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "GIF", "WEBP")  # JPEG includes MPO
_ENCODINGS = ("keep", "png", "jpeg")
_FRAMES = ("middle", "first")
_PHI_MODES = ("quarantine", "redact", "off")
_MAGIC_NAMES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF8": "GIF", b"BM": "BMP",
                b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"RIFF": "WEBP"}
_RASTER_MAGIC = tuple(_MAGIC_NAMES)


@dataclass(frozen=True)
class ImagePolicy:
    """How images are normalized; part of every cache key through `salt()`.

    Args:
        max_side: downscale (aspect kept, Lanczos) when the long side exceeds it; None keeps size.
        encode: "keep" keeps the source's compressed stream (minus metadata) for a JPEG/PNG whose
            pixels need no change, and otherwise re-encodes as JPEG for lossy sources (JPEG,
            lossy WebP: a PNG of a JPEG is 5-10x larger and no better) and PNG for the rest
            (DICOM included). "png" / "jpeg" always re-encode to that format.
        jpeg_quality: quality of any JPEG medmix writes.
        frame: which frame of a multi-frame DICOM or animated GIF/WebP/APNG/multi-page TIFF:
            "middle" (default: the most representative slice of a volume or clip) or "first".
            An MPO (camera multi-picture JPEG) always gives its primary picture.
        max_pixels: refuse images with more pixels than this before decoding them (a 1 KB PNG
            can declare 100k x 100k pixels and ask for 30 GB).
        burned_in_text / burned_in_text_dicom: "quarantine" | "redact" | "off" for identifying
            text in the pixels of raster / DICOM inputs (`medmix.phi`); the build sets them per
            source from the recipe. `ImagePolicy()` checks nothing, as before.
        text_identifiers: the same modes for a row's question/answer/context (`medmix.normalize`);
            it rides here because the policy is what every unit and its cache key carry.
    """

    max_side: int | None = None
    encode: str = "keep"
    jpeg_quality: int = 90
    frame: str = "middle"
    max_pixels: int = 100_000_000
    burned_in_text: str = "off"
    burned_in_text_dicom: str = "off"
    text_identifiers: str = "off"

    def __post_init__(self) -> None:
        def positive(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1

        if self.encode not in _ENCODINGS:
            raise MedmixError(f"image policy: encode must be one of {list(_ENCODINGS)}, got {self.encode!r}")
        if self.frame not in _FRAMES:
            raise MedmixError(f"image policy: frame must be one of {list(_FRAMES)}, got {self.frame!r}")
        if self.max_side is not None and not positive(self.max_side):
            raise MedmixError(f"image policy: max_side must be a positive integer or null, got {self.max_side!r}")
        if not positive(self.jpeg_quality) or self.jpeg_quality > 100:
            raise MedmixError(f"image policy: jpeg_quality must be an integer in 1..100, got {self.jpeg_quality!r}")
        for key in ("burned_in_text", "burned_in_text_dicom", "text_identifiers"):
            if getattr(self, key) not in _PHI_MODES:
                raise MedmixError(f"image policy: {key} must be one of {list(_PHI_MODES)}, got {getattr(self, key)!r}")
        if not positive(self.max_pixels):
            raise MedmixError(f"image policy: max_pixels must be a positive integer, got {self.max_pixels!r}")

    def salt(self) -> dict[str, Any]:
        """Every field plus the normalizer's version: what decides the output bytes."""
        return dataclasses.asdict(self) | {"imaging_version": IMAGING_VERSION}


@dataclass(frozen=True)
class NormalizedImage:
    """A normalized image and its hashes.

    `pixel_hash` (see `pixel_hash()`) is over the decoded normalized pixels, taken before any
    lossy encoding: it names the picture, not the file. For PNG and kept JPEG output it equals
    the hash of `data` decoded again; for a re-encoded JPEG it is the hash of what was encoded.
    """

    data: bytes
    format: str  # "png" | "jpeg"
    width: int
    height: int
    pixel_hash: str
    phash: int
    deid: dict[str, Any] | None = None  # what `medmix.phi` did to the pixels (redaction), for `meta.deid`


def normalize_image(data: bytes, *, name: str, policy: ImagePolicy = ImagePolicy()) -> NormalizedImage:
    """Decode `data` (any supported raster or DICOM) once and return it normalized and hashed.

    `name` is only used to detect a .dcm without preamble and to say which file failed.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not data:
        raise RowError("empty file (0 bytes)", file=name)
    check = None
    if _is_dicom(data, name):
        check = _phi_check(policy.burned_in_text_dicom, name, data)
        img = decode_dicom(data, name=name, frame=policy.frame, max_pixels=policy.max_pixels)
        source = _Decoded(img, fmt="DICOM", stream=None, lossy=False)
    else:
        check = _phi_check(policy.burned_in_text, name)
        fast = _plain_jpeg(data, name, policy, check)
        if fast is not None:
            return fast
        source = _decode_raster(data, name=name, policy=policy)
    try:
        img, pixels_changed = _canonical(source)
        img, resized = _fit(img, policy.max_side)
        pixels = pixels_of(img)
        pixels, redacted, deid = _checked(check, pixels)
        if redacted:
            pixels_changed = True
            img = Image.fromarray(pixels)
        if policy.encode == "keep" and source.stream is not None and not (pixels_changed or resized):
            out, fmt = source.stream, source.fmt.lower()
        else:
            fmt = policy.encode if policy.encode != "keep" else ("jpeg" if source.lossy else "png")
            out = _encode(img, pixels, fmt, policy.jpeg_quality)
        return _normalized(out, fmt, pixels, deid)
    except RowError:
        raise
    except Exception as exc:  # noqa: BLE001 - a Pillow failure after decode still loses only this row
        raise RowError(f"cannot normalize {source.fmt} image: {_brief(exc)}", file=name) from None


def _phi_check(mode: str, name: str, dicom: bytes | None = None) -> Callable[[np.ndarray], Any] | None:
    """The burned-in text check for one image (None under "off"); a DICOM whose header declares
    burned-in identifiers is refused here, before its pixels are decoded."""
    if mode == "off":
        return None
    from medmix import phi

    header = phi.read_dicom_header(dicom) if dicom is not None else None
    phi.refuse_declared(header, mode, name=name)
    return lambda pixels: phi.check_image(pixels, mode, header, name=name)


def _checked(check: Callable[[np.ndarray], Any] | None, pixels: np.ndarray) -> tuple[np.ndarray, bool, Any]:
    """(pixels after the burned-in text check, whether it changed them, its de-identification
    record for the manifest); the pixels unchanged and no record without a check."""
    if check is None:
        return pixels, False, None
    result = check(pixels)
    return (result.pixels if result.changed else pixels), bool(result.changed), result.meta


def _plain_jpeg(data: bytes, name: str, policy: ImagePolicy,
                check: Callable[[np.ndarray], Any] | None = None) -> NormalizedImage | None:
    """The fast path (`medmix.imaging.jpeg`) for the most common input: a plain YCbCr/grey JPEG that
    needs no pixel change. No Pillow image is made at all; the result is the one the Pillow path
    gives for the same bytes (tests/imaging/test_jpeg.py). None: use the Pillow path."""
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    header = jpeg.plain_header(data)
    if header is None:
        return None
    width, height, mode = header
    if not 0 < width * height <= policy.max_pixels or (policy.max_side and max(width, height) > policy.max_side):
        return None  # the Pillow path refuses (with its message) or resizes
    keep = policy.encode == "keep"
    # a re-encode needs only the segments before the scan (for EXIF); libjpeg's strict decode
    # below catches truncation, and the Pillow path then names it
    stream, exif = _walk_jpeg(data, name, headers_only=not keep)
    if exif and _exif_orientation(data) != 1:
        return None  # the Pillow path turns it upright
    pixels = jpeg.decode(data, mode)
    if pixels is None:
        return None
    pixels, redacted, deid = _checked(check, pixels)
    if redacted:
        keep = False
    if keep and stream is not None:
        return _normalized(stream, "jpeg", pixels, deid)
    fmt = "png" if policy.encode == "png" else "jpeg"
    img = Image.fromarray(pixels) if fmt == "png" else None
    return _normalized(_encode(img, pixels, fmt, policy.jpeg_quality), fmt, pixels, deid)


def _normalized(data: bytes, fmt: str, pixels: np.ndarray, deid: dict[str, Any] | None = None) -> NormalizedImage:
    height, width = pixels.shape[:2]
    return NormalizedImage(data=data, format=fmt, width=width, height=height, pixel_hash=pixel_hash(pixels),
                           phash=phash64(pixels), deid=deid)


def _exif_orientation(data: bytes) -> int | None:
    """The EXIF orientation tag of a JPEG that has an EXIF segment (Pillow parses the header only);
    None when Pillow cannot read it (the Pillow path then decides what the file is worth)."""
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as img:
            return _orientation(img)
    except Exception:  # noqa: BLE001 - header parsers raise SyntaxError, struct.error, ...
        return None


def pixel_hash(pixels: np.ndarray | Image.Image) -> str:
    """The picture's identity: XXH3-128 (32 hex digits) of `"{mode} {width}x{height}\\n"` followed by
    the raw pixel rows (1 byte per pixel for L, 3 for RGB, no padding: `Image.tobytes()`, and
    the bytes of the (H, W) / (H, W, 3) uint8 array medmix works on).

    Hashed straight from the decoded array, without a copy (0.02 ms for 384x384 RGB; Pillow's
    `tobytes()` copy alone was 0.07 ms). 128 bits keep chance collisions out of reach (~1e-26
    for 3.35M images). XXH3 is not built to resist crafted collisions; the worst a crafted pair
    can do is have one row dropped as an exact duplicate of the other, which `removed.parquet`
    records with both ids.
    """
    if isinstance(pixels, Image.Image):
        mode, (width, height), raw = pixels.mode, pixels.size, pixels.tobytes()
    else:
        (height, width), mode = pixels.shape[:2], "L" if pixels.ndim == 2 else "RGB"
        raw = np.ascontiguousarray(pixels)
    digest = xxhash.xxh3_128(f"{mode} {width}x{height}\n".encode())
    digest.update(raw)
    return digest.hexdigest()


# -- decoding -------------------------------------------------------------------------------


@dataclass
class _Decoded:
    """A fully loaded image plus what "keep" needs: the metadata-free source stream, if any."""

    img: Image.Image
    fmt: str
    stream: bytes | None  # JPEG/PNG bytes with metadata removed; None when not reusable
    lossy: bool
    frame_chosen: bool = False


def _is_dicom(data: bytes, name: str) -> bool:
    if has_dicom_magic(data):
        return True
    # A preamble-less .dcm (ACR-NEMA style) is DICOM unless its bytes are plainly a raster image
    # (mislabelled exports happen); pydicom would otherwise "parse" a JPEG as garbage tags.
    return name.lower().endswith((".dcm", ".dicom")) and not data.startswith(_RASTER_MAGIC)


def _decode_raster(data: bytes, *, name: str, policy: ImagePolicy) -> _Decoded:
    try:
        with warnings.catch_warnings():
            # Our own limit below decides; Pillow's warning between its two limits is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=RASTER_FORMATS)
    except Image.DecompressionBombError as exc:
        raise RowError(f"decompression bomb: {exc}", file=name) from None
    except UnidentifiedImageError:
        claimed = _sniff(data)
        if claimed in ("JPEG", "PNG"):
            # Pillow 12 cannot identify a JPEG cut inside its header at all (13 opens it and fails
            # later); the structural walk names the cut the same way for every Pillow version.
            _strip_metadata(data, claimed, name=name)
        raise RowError(f"not an image: no supported format ({', '.join(RASTER_FORMATS)}, DICOM) "
                       f"recognizes the first bytes {data[:8]!r}", file=name) from None
    except Exception as exc:  # noqa: BLE001 - header parsers raise SyntaxError, struct.error, ...
        kind = "truncated" if "truncat" in str(exc).lower() else "corrupt"
        raise RowError(f"{kind} {_sniff(data)}: bad header ({_brief(exc)})", file=name) from None
    fmt = img.format or "?"
    width, height = img.size
    # Checked here, from the header, before any pixel is decoded; does not depend on
    # PIL.Image.MAX_IMAGE_PIXELS, which any library in the process may change.
    if width * height > policy.max_pixels:
        raise RowError(f"decompression bomb: {width}x{height} = {width * height} pixels > limit "
                       f"{policy.max_pixels}", file=name)
    if width <= 0 or height <= 0:
        raise RowError(f"{fmt} declares an empty image ({width}x{height})", file=name)

    # Structural check first: it catches truncation even where a caller has set
    # PIL.ImageFile.LOAD_TRUNCATED_IMAGES=True (then Pillow pads missing pixels with grey).
    stream = _strip_metadata(data, fmt, name=name)
    frames = getattr(img, "n_frames", 1) if fmt != "MPO" else 1  # MPO: the primary picture
    try:
        index = frame_index(frames, policy.frame)
        if index:
            img.seek(index)
            if img.width * img.height > policy.max_pixels:  # pages of a TIFF may differ in size
                raise RowError(f"decompression bomb: frame {index} is {img.width}x{img.height} = "
                               f"{img.width * img.height} pixels > limit {policy.max_pixels}", file=name)
        img.load()
    except RowError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, ...
        text = str(exc)
        kind = "truncated" if "truncated" in text or isinstance(exc, EOFError) else "corrupt"
        raise RowError(f"{kind} {fmt}: {_brief(exc)}", file=name) from None
    lossy = fmt in ("JPEG", "MPO") or (fmt == "WEBP" and b"VP8 " in data[12:4096])
    return _Decoded(img, fmt=fmt if fmt != "MPO" else "JPEG", stream=stream if frames == 1 else None,
                    lossy=lossy, frame_chosen=frames > 1)


def _canonical(source: _Decoded) -> tuple[Image.Image, bool]:
    """Upright, 8-bit L or RGB, opaque. Returns the image and whether its pixels changed."""
    img, changed = source.img, source.frame_chosen
    if source.fmt != "DICOM":
        orientation = _orientation(img)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            img, changed = ImageOps.exif_transpose(img), True
    if "transparency" in img.info and img.mode in ("L", "RGB", "P"):
        # PNG tRNS / GIF transparency: turn it into a real alpha channel, composited below.
        img, changed = img.convert("LA" if img.mode == "L" else "RGBA"), True
    mode = img.mode
    if mode in ("L", "RGB"):
        return img, changed
    if mode in ("LA", "La"):
        return _on_white(img.convert("LA"), "L"), True
    if mode in ("RGBA", "RGBa", "PA"):
        return _on_white(img.convert("RGBA"), "RGB"), True
    if mode == "1":
        return img.convert("L"), True
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _high_depth_to_l(img), True
    return img.convert("RGB"), True  # P, CMYK, YCbCr, LAB, HSV


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1, upright, when there is none)."""
    return int(img.getexif().get(ExifTags.Base.Orientation, 1))


def _on_white(img: Image.Image, mode: str) -> Image.Image:
    """Composite on white: transparent regions of scans/figures are paper, not black."""
    base = Image.new(mode, img.size, 255 if mode == "L" else (255, 255, 255))
    base.paste(img.convert(mode), mask=img.getchannel("A"))
    return base


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float grayscale → 8-bit by the image's own min..max.

    Such PNGs/TIFFs are mostly exported scans using 10-12 of 16 bits; a fixed >>8 would make
    them near-black. Same rule as a DICOM without a window.
    """
    arr = np.asarray(img, dtype=np.float64)
    return Image.fromarray(to_uint8(arr, float(arr.min()), float(arr.max())))


def _fit(img: Image.Image, max_side: int | None) -> tuple[Image.Image, bool]:
    width, height = img.size
    long_side = max(width, height)
    if max_side is None or long_side <= max_side:
        return img, False
    if width >= height:
        size = (max_side, max(1, round(height * max_side / width)))
    else:
        size = (max(1, round(width * max_side / height)), max_side)
    # reducing_gap=3: box pre-shrink then Lanczos; visually the same as pure Lanczos, much faster.
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), True


# -- encoding -------------------------------------------------------------------------------


def _encode(img: Image.Image | None, pixels: np.ndarray, fmt: str, quality: int) -> bytes:
    """JPEG from the pixel array (`medmix.imaging.jpeg.encode`, whichever path decoded them), PNG from the
    Pillow image of the same pixels."""
    if fmt == "jpeg":
        # libjpeg-turbo writes JFIF + tables + scan and nothing else (tests/imaging/test_jpeg.py
        # pins it), so the metadata whitelist below would find nothing to drop
        return jpeg.encode(pixels, quality)
    # Pillow copies some of `info` into files it writes (a PNG ICC profile or transparency):
    # encode a bare view of the pixels.
    img.info = {}
    buf = io.BytesIO()
    img.save(buf, "PNG")
    out = buf.getvalue()
    # Defence in depth: what we wrote goes through the same whitelist as what we keep.
    stream = _strip_png(out, name="<encoded>")
    return stream if stream is not None else out


# -- container walking: what "keep" may reuse, and truncation independent of Pillow globals --

# Segments a JPEG decoder needs. Everything else before/between scans (APP1 EXIF/XMP, APP2
# ICC/MPF, APP13 IPTC, COM, ...) is droppable without changing a decoded pixel.
_JPEG_KEEP = frozenset({0xC0, 0xC1, 0xC2, 0xC4, 0xDB, 0xDD})
# Next marker after entropy-coded data: 0xFF not followed by stuffing (00), RSTn or fill (FF).
_JPEG_NEXT_MARKER = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEEP = frozenset({b"IHDR", b"PLTE", b"IDAT"})


def _strip_metadata(data: bytes, fmt: str, *, name: str) -> bytes | None:
    """`data` minus metadata for JPEG/PNG (None for other formats or unusual structure).

    Raises RowError when the container ends before its end marker (truncated file).
    """
    if fmt in ("JPEG", "MPO"):
        return _strip_jpeg(data, name)
    if fmt == "PNG":
        return _strip_png(data, name)
    return None


def _strip_jpeg(data: bytes, name: str) -> bytes | None:
    return _walk_jpeg(data, name)[0]


def _walk_jpeg(data: bytes, name: str, headers_only: bool = False) -> tuple[bytes | None, bool]:
    """(`data` minus metadata or None, whether it has an EXIF segment: orientation lives there).

    `headers_only`: stop at the first scan, returning (None, exif), for callers that re-encode
    and need only the EXIF answer (scanning the entropy-coded data is most of the walk's cost)."""
    size = len(data)
    exif = False
    view = memoryview(data)  # kept pieces are views: no copy at all unless something is dropped
    parts: list[bytes | memoryview] = [b"\xff\xd8"]
    changed = False
    pos = 2
    while True:
        if pos >= size:
            raise RowError("truncated JPEG: file ends before the EOI marker", file=name)
        if data[pos] != 0xFF:
            return None, exif  # bytes between segments: Pillow tolerates them, we just don't reuse
        start = pos
        while pos < size and data[pos] == 0xFF:
            pos += 1
        changed |= pos - start > 1  # fill bytes
        if pos >= size:
            raise RowError("truncated JPEG: file ends inside a marker", file=name)
        marker = data[pos]
        if marker == 0xD9:  # EOI; anything after it (appended files, MPO pictures) is dropped
            parts.append(b"\xff\xd9")
            changed |= pos + 1 != size
            break
        if marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            return None, exif
        if pos + 3 > size:
            raise RowError("truncated JPEG: file ends inside a segment header", file=name)
        length = int.from_bytes(data[pos + 1:pos + 3], "big")
        end = pos + 1 + length
        if length < 2:
            return None, exif
        if end > size:
            raise RowError(f"truncated JPEG: segment 0xFF{marker:02X} runs past the end of the file",
                           file=name)
        payload = data[pos + 3:end]
        if marker == 0xDA:  # SOS: header, then entropy-coded data up to the next real marker
            if headers_only:
                return None, exif
            found = _JPEG_NEXT_MARKER.search(data, end)
            if found is None:
                raise RowError("truncated JPEG: image data runs to the end of the file (no EOI marker)",
                               file=name)
            parts.append(view[pos - 1:found.start()])
            pos = found.start()
            continue
        if marker in _JPEG_KEEP:
            parts.append(view[pos - 1:end])
        elif marker == 0xE0 and payload.startswith(b"JFIF\x00") and length >= 16:
            # JFIF says "YCbCr"; keep it, minus any embedded thumbnail (more pixels to leak).
            if length == 16:
                parts.append(view[pos - 1:end])
            else:
                parts.append(b"\xff\xe0\x00\x10" + payload[:12] + b"\x00\x00")
                changed = True
        elif marker == 0xEE and payload.startswith(b"Adobe") and length == 14:
            parts.append(view[pos - 1:end])  # colour-transform flag; decoding depends on it
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:
            changed = True  # APPn / COM: metadata
            exif |= marker == 0xE1 and payload.startswith(b"Exif\x00")
        else:
            return None, exif  # lossless/hierarchical/arithmetic SOFs, DNL, ...: not ours to rewrite
        pos = end
    return (b"".join(parts) if changed else data), exif


def _strip_png(data: bytes, name: str) -> bytes | None:
    size = len(data)
    view = memoryview(data)
    parts: list[bytes | memoryview] = [_PNG_SIGNATURE]
    changed = False
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > size:
            raise RowError("truncated PNG: file ends before the IEND chunk", file=name)
        length = int.from_bytes(data[pos:pos + 4], "big")
        ctype = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > size:
            raise RowError(f"truncated PNG: chunk {ctype!r} runs past the end of the file", file=name)
        if ctype == b"IEND":
            parts.append(view[pos:end])
            changed |= end != size
            break
        if ctype in _PNG_KEEP:
            parts.append(view[pos:end])
        elif ctype[:1].islower():
            changed = True  # ancillary: tEXt/zTXt/iTXt/eXIf/iCCP/tIME/gAMA/... never needed for pixels
        else:
            return None  # an unknown critical chunk
        pos = end
    return b"".join(parts) if changed else data


def _sniff(data: bytes) -> str:
    """The format the first bytes claim, for error messages when Pillow could not say."""
    return next((fmt for magic, fmt in _MAGIC_NAMES.items() if data.startswith(magic)), "image")


def _brief(exc: BaseException) -> str:
    """One line, bounded: codec errors can be multi-line lists of every plugin's complaint."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}"[:400]
