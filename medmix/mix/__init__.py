"""The mix stage: which normalized rows enter the mixture. The index of the normalized cache, exact
and near-duplicate detection, text similarity, decontamination, the selection steps, the audit
of removed rows, and the shard writer.

Modules:
- `index`: The mix stage's working set: a compact per-row index of the normalized cache.
- `dedup`: Exact and near-duplicate detection: images by 64-bit perceptual hash, anything by exact key.
- `textsim`: Text identity for dedup and decontamination: normalization, exact keys, MinHash-LSH clusters.
- `decontam`: Evaluation-set decontamination of training text: shared word n-grams.
- `select`: Stage 2 policy: which normalized rows enter the mixture, how many per source, and in which order.
- `removed`: removed.parquet: every row dedup or decontamination dropped, beside what it matched.
- `shard_writer`: Write the mixture's shards in its global shuffled order with memory bounded by one shard.
"""
