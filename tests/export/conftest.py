"""Fixtures of the export tests: the demo mixture (built once), a generated one, and their rows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from medmix.pipeline import BuildOptions, build
from medmix.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]


def bench_module(name: str = "export_throughput"):
    """A script of benchmarks/ as a module: export_throughput's generator the sharding tests share,
    export_readback's row comparison."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def mixture_rows(mixture: Path) -> list[dict]:
    """Every row of the mixture's train split, in the manifest's order (the export's order)."""
    manifest = json.loads((mixture / "manifest.json").read_text())
    return [r for s in manifest["shards"] for r in pq.read_table(mixture / s["path"]).to_pylist()]


@pytest.fixture(scope="session")
def readback():
    """benchmarks/export_readback.py as a module."""
    return bench_module("export_readback")


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("export-demo")
    build(load_recipe("demo"), BuildOptions(out=base / "mixture", cache=base / "cache"), log=lambda m: None)
    return base / "mixture"


@pytest.fixture(scope="session")
def demo_rows(demo) -> list[dict]:
    return mixture_rows(demo)


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Path:
    """3,000 rows, 30% with tiny JPEGs, every 4th image row sharing the previous picture; 7 input shards."""
    out = tmp_path_factory.mktemp("export-generated") / "mixture"
    bench_module().make_mixture(out, 3000, shard_rows=450, side=16, shared_every=4, seed=7)
    return out


@pytest.fixture(scope="session")
def generated_rows(generated) -> list[dict]:
    return mixture_rows(generated)
