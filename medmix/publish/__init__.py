"""A built mixture leaving the build: statistics and plots, the dataset card, the Hub upload, and
the generated DATASETS.md.

Modules:
- `stats`: Figures about a built mixture, computed by streaming its shards column by column.
- `plots`: PNG charts of a mixture, drawn only from the dict `medmix.publish.stats` computes.
- `card`: The Hub dataset card (README.md) of a pushed mixture: YAML metadata + a license-aware body.
- `hub`: `medmix push`: lay a mixture out as a Hub dataset repository and upload it, license-aware.
- `datasets_md`: DATASETS.md is generated: a summary table from the registry + one hand-written section per
"""
