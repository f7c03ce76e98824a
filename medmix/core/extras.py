"""Which optional extra each `medmix` command needs, declared once, and the one line a user gets without it.

`pip install medmix` brings what `build`, `lock`, `sources`, `doctor`, `stats` and `push` import.
Training, evaluation, the viewer and Ray each pull in packages the rest never imports
(transformers, peft, scikit-learn, starlette, ray), so they are extras. Before this table, a user
who ran `medmix train` after the plain install got a traceback ending in `No module named
'safetensors'` and had to guess the extra. Now every command is listed in `COMMANDS` with the
extra it needs (a test fails when a registered command is missing from it), the CLI probes the
extra's modules before the command runs, and a missing one is one line:
`medmix train needs its extra: pip install "medmix[train]"`.

The idea is datatrove's `_requires_dependencies` (a pipeline step class lists the packages it needs,
checked when the step is created); here the unit is a command, and the answer names the extra rather
than the packages, since the extra is what pyproject.toml pins together.

Probing uses `importlib.util.find_spec`, which locates a module without importing it: 4.5 ms for
the five modules of `train`, where `import transformers` with `AutoModel` takes 3.8 s (measured
2026-12-06 on the 2-core dev machine). A module that is found but fails to import
is not the extra's absence and surfaces as itself.
"""

from __future__ import annotations

import importlib.util

from medmix.core.errors import MedmixError

# extra (as in pyproject.toml's [project.optional-dependencies]) → the import names probed for it.
# tests/package/test_extras.py checks each name belongs to a distribution that extra lists.
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("transformers", "peft", "tokenizers", "safetensors", "torchdata"),
    # `eval vqa` loads a medmix checkpoint through trainer.model (safetensors, peft, tokenizers);
    # `eval classify` fits scikit-learn probes on transformers encoders
    "eval": ("transformers", "peft", "tokenizers", "safetensors", "sklearn"),
    "view": ("starlette", "uvicorn", "jinja2"),
    # `medmix ablate`: trains proxies (train) and fits the regmix ridge (scikit-learn)
    "ablate": ("transformers", "peft", "tokenizers", "safetensors", "torchdata", "sklearn"),
    # `medmix demo`: the Gradio page, and the checkpoint loaded through trainer.model as `eval vqa` does
    "demo": ("gradio", "transformers", "peft", "tokenizers", "safetensors"),
    # also URL --out/--cache and the streaming loader (fsspec, s3fs); medmix.core.storage says so itself
    "ray": ("ray",),
}

# Every command (as typed after `medmix`) → the extra it needs, None for the plain install.
# An option that pulls in an extra is its own entry, checked where the option is read.
COMMANDS: dict[str, str | None] = {
    "build": None,
    "build --executor ray": "ray",
    "lock": None,
    "sources": None,
    "doctor": None,
    "stats": None,
    "stats --tokenizer": "train",
    "push": None,
    "export": None,
    "view": "view",
    "view --model": "demo",
    "train": "train",
    "eval vqa": "eval",
    "eval classify": "eval",
    "demo": "demo",
    "push-model": None,
    "ablate": "ablate",
}


def install_command(extra: str) -> str:
    """`pip install "medmix[train]"`, quoted so zsh does not read the brackets as a glob."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    return f'pip install "medmix[{extra}]"'


class MissingExtra(MedmixError):
    """A command ran without the extra it needs. The message is the one line a user sees."""

    def __init__(self, command: str, extra: str, module: str) -> None:
        self.command, self.extra, self.module = command, extra, module
        super().__init__(f"medmix {command} needs its extra: {install_command(extra)} "
                         f"(module {module!r} is not installed)")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a half-imported module without __spec__
        return False


def missing_module(extra: str) -> str | None:
    """The first module of `extra` that is not installed, or None when the extra is complete."""
    return next((m for m in EXTRAS[extra] if not _installed(m)), None)


def require(command: str) -> None:
    """Raise `MissingExtra` when `command`'s extra (from `COMMANDS`) is not installed; no-op otherwise."""
    extra = COMMANDS[command]
    if extra is None:
        return
    module = missing_module(extra)
    if module is not None:
        raise MissingExtra(command, extra, module)


def extra_providing(module: str) -> str | None:
    """The extra whose packages include top-level `module` (for a `ModuleNotFoundError` the probe missed)."""
    top = module.partition(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)
