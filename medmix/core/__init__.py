"""What every layer of medmix stands on: errors, the row schema, the mixture folder format, licenses,
modalities, hashing, storage URLs, atomic Parquet writing, which extra a feature needs, progress and
the distributed world.

Nothing here imports another medmix package (tests/package/test_layering.py), which is why a
module that two stages share lives here rather than beside the first stage that needed it.

Modules:
- `errors`: Errors, split by what the build does about them.
- `schema`: The one row schema every medmix stage reads and writes.
- `layout`: The mixture folder format: the one place that knows what a built mixture looks like on disk.
- `licenses`: License policy: licenses are data (an SPDX id on every row), and a recipe says what it accepts.
- `modality`: One modality vocabulary across sources: DICOM's Modality (0008,0060) defined terms.
- `hashing`: SplitMix64: the one 64-bit mixing function medmix's orders and sketches are built on.
- `storage`: Mixture and cache folders addressed by fsspec URLs: local paths, `file://`, `s3://`, `gs://`, ...
- `writer`: Parquet writing with the two guarantees a build needs: atomic commit and byte determinism.
- `extras`: Which optional extra each `medmix` command needs, declared once, and the one line a user gets without it.
- `progress`: Rich progress for long builds: one bar per stage, updated from the build's progress callback.
- `distributed`: Where this process sits in a torch.distributed job: the one answer loader and trainer share.
"""
