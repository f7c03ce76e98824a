"""Getting upstream bytes onto disk without trusting them: downloads with sha256 and resume, safe
archive extraction, fingerprints of local inputs, and lock files.

Modules:
- `download`: Getting upstream bytes onto local disk: HTTP(S) with sha256, resume and retries; the Hub; manual files.
- `extract`: Unpacking upstream archives without trusting them.
- `fileid`: What a local input *is*, for cache keys: a fingerprint of a folder or file a source reads.
- `lock`: Lock files: `manifests/<recipe>.lock.json` pins every upstream file of a recipe.
"""
