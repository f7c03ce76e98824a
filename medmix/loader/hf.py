"""`load()`: a mixture as a `datasets.Dataset`, the no-surprise path (memory-mapped Arrow, the HF ecosystem)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import datasets

from medmix.core.layout import mixture_files
from medmix.core.storage import is_remote

__all__ = ["load"]


def load(path_or_repo_id: str | os.PathLike[str], split: str = "train",
         **kwargs: Any) -> datasets.Dataset | datasets.IterableDataset:
    """A mixture as a `datasets.Dataset` (images decode to PIL), from a folder or the Hub.

    Local folders go through `datasets`' Parquet builder, which converts the shards once into
    memory-mapped Arrow files in its cache (`cache_dir=` to choose where; `streaming=True`
    avoids the copy and returns an IterableDataset). Anything else is taken as a Hub dataset
    id and handed to `datasets.load_dataset` unchanged. Extra keyword arguments pass through.
    """
    local = Path(path_or_repo_id)
    if is_remote(path_or_repo_id):  # a mixture at a URL: datasets reads its shards through fsspec
        from medmix.core.layout import remote_mixture_files
        from medmix.core.storage import Store

        store = Store(str(path_or_repo_id), kwargs.get("storage_options"))
        files = [store.child_url(rel) for rel, _, _ in remote_mixture_files(store, split)]
        ds = datasets.load_dataset("parquet", data_files={split: files}, split=split, **kwargs)
    elif local.exists():
        files = [str(f) for f, _ in mixture_files(local, split)]
        ds = datasets.load_dataset("parquet", data_files={split: files}, split=split, **kwargs)
    else:
        ds = datasets.load_dataset(str(path_or_repo_id), split=split, **kwargs)
    if ds.features is not None and "image" in ds.features and not isinstance(ds.features["image"], datasets.Image):
        ds = ds.cast_column("image", datasets.Image())
    return ds
