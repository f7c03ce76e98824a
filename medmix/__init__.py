"""medmix: reproducible medical vision-language pretraining mixtures.

The public API, in the three lines a notebook needs:

    import medmix
    result = medmix.build("demo", out="demo-mixture")      # a BuildResult
    ds = medmix.load("demo-mixture")                    # a datasets.Dataset

`medmix.Recipe` / `medmix.load_recipe` read and validate recipes; `medmix.MixtureDataset` and
`medmix.WeightedMixture` are the streaming, resumable torch loaders. Everything imports lazily,
so `import medmix` stays cheap for the command line (torch and datasets load only when used).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "build", "BuildResult", "Recipe", "load_recipe", "load", "MixtureDataset",
           "WeightedMixture"]

_HOMES = {"build": "medmix.api", "BuildResult": "medmix.api", "Recipe": "medmix.recipe",
          "load_recipe": "medmix.recipe", "load": "medmix.loader", "MixtureDataset": "medmix.loader",
          "WeightedMixture": "medmix.loader"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'medmix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
