"""Images in, one canonical image out: raster and DICOM decoding, JPEG through libjpeg-turbo,
perceptual hashes and thumbnails. `canonical.normalize_image` is the entry point.

Modules:
- `canonical`: Image normalization: any raster or DICOM in, one clean L/RGB image out, with its hashes.
- `dicom`: DICOM → one displayable 8-bit frame (L or RGB), pixels only.
- `jpeg`: JPEG in and out through libjpeg-turbo directly (simplejpeg), as NumPy pixel arrays.
- `phash`: 64-bit DCT perceptual hash, for near-duplicate images across sources.
- `thumbnail`: Small images from stored image bytes: removed.parquet's audit thumbnails and `medmix view`'s grid.
"""
