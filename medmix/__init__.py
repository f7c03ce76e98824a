"""medmix: reproducible medical vision-language pretraining mixtures.

`medmix.load(path_or_repo_id)` opens a built mixture as a `datasets.Dataset`; the streaming,
resumable torch loader is `medmix.loader.MixtureDataset`. Both import lazily so `import medmix`
stays cheap for the CLI.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load", "MixtureDataset", "WeightedMixture"]


def __getattr__(name: str) -> Any:
    if name in ("load", "MixtureDataset", "WeightedMixture"):  # torch/datasets load only when used
        from medmix import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'medmix' has no attribute {name!r}")
