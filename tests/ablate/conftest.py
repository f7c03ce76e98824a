from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from planted import make_planted  # noqa: E402


@pytest.fixture(scope="session")
def planted_recipe(tmp_path_factory) -> Path:
    return make_planted(tmp_path_factory.mktemp("planted"), rows=48)


@pytest.fixture(scope="session")
def planted_build(planted_recipe, tmp_path_factory) -> Path:
    from medmix.pipeline import build
    from medmix.planning import BuildOptions
    from medmix.recipe import load_recipe

    out = tmp_path_factory.mktemp("planted-mix")
    build(load_recipe(str(planted_recipe)), BuildOptions(out=out, cache=out.parent / "planted-cache"),
          log=lambda m: None)
    return out
