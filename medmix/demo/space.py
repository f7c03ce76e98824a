"""A checkpoint leaving the machine: a model card, a Hub model repo, a ready Hugging Face Space.

What is shipped is what generation needs and nothing else: `config.json`, `vision/`,
`projector.safetensors`, `adapter/`, `tokenizer/`, and `llm_base/` for a random-init LLM (its
frozen weights exist nowhere else). Optimizer state and per-rank RNG/loader state stay home: they
only resume training, and they are most of a checkpoint's bytes.

The card is computed, like the dataset card (`medmix.publish.card`): the mixture's recipe, the sha256 of
its manifest and of its recipe, and every training source with its license and what that license
allows. The weights carry the terms of the most restrictive training license (a model trained on
non-commercial rows is not cleared for commercial use), and the card says so in plain words. Same
inputs give the same card bytes (no dates, no local paths).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from medmix import __version__
from medmix.core.errors import MedmixError
from medmix.core.layout import manifest_sha256, read_manifest

SHIPPED = ("config.json", "projector.safetensors", "vision", "adapter", "tokenizer", "llm_base")
Log = Callable[[str], None]


def _train_sources(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(n, e) for n, e in sorted(manifest.get("sources", {}).items()) if not e.get("evaluation_only")]


def card_license(manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(Hub license id, extra YAML keys): one license when every training source shares it, else `other`."""
    from medmix.publish.card import hub_license

    spdx = sorted({e.get("license") or "unknown" for _, e in _train_sources(manifest)})
    hub = sorted({hub_license(s) for s in spdx})
    if len(hub) == 1 and hub[0] != "other":
        return hub[0], {}
    return "other", {"license_name": "medmix-training-data-terms", "license_link": "LICENSE.md"}


def terms_text(manifest: dict[str, Any]) -> str:
    """The license section: per-source table and the combined terms the weights inherit."""
    from medmix.core.licenses import terms

    rows, commercial, redistribution = [], True, True
    for name, entry in _train_sources(manifest):
        lic = entry.get("license") or "unknown"
        t = terms(lic)
        commercial &= t.known and t.commercial
        redistribution &= t.known and t.redistribution
        kept = (entry.get("counts") or {}).get("written", (entry.get("counts") or {}).get("selected", ""))
        rows.append(f"| {name} | {lic} | {t.summary()} | {kept} |")
    verdict = ("All training sources allow commercial use." if commercial else
               "**Not cleared for commercial use**: at least one training source does not allow it (or its terms "
               "are unknown). These weights are offered for research under the most restrictive of the terms "
               "below.")
    if not redistribution:
        verdict += " At least one source does not allow redistribution of its data; the weights are not data, " \
                   "but check each license before you share derived work."
    return "\n".join(["## License terms", "",
                      "The weights were trained on a medmix mixture; they carry the terms of its sources:", "",
                      "| source | license | terms | rows |", "|---|---|---|---:|", *rows, "", verdict, ""])


def model_card(ckpt: Path, mixture: Path, *, repo_id: str | None = None) -> tuple[dict[str, Any], str]:
    """(YAML metadata, Markdown body) of the model card for `ckpt` trained on `mixture`."""
    manifest = read_manifest(mixture)
    cfg = json.loads((ckpt / "config.json").read_text())
    state_file = ckpt / "trainer_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    recipe = manifest.get("recipe") or {}
    lic, extra = card_license(manifest)
    meta: dict[str, Any] = {"license": lic, **extra, "library_name": "medmix", "pipeline_tag": "image-text-to-text",
                            "tags": ["medical", "medmix", "vision-language", "lora"]}
    base = (cfg.get("model") or {}).get("llm")
    if base:
        meta["base_model"] = base
    steps = state.get("step")
    held = ", ".join((recipe.get("decontaminate") or {}).get("against", []))
    body = [f"# medmix checkpoint: {cfg.get('name', 'model')}" + (f", step {steps}" if steps is not None else ""), "",
            "A medical vision-language model trained with medmix: a vision encoder, an MLP projector and a LoRA "
            "adapter on a causal language model (`config.json` holds the full trainer configuration).", "",
            "**Research use only. Not a medical device; not for diagnosis or any clinical decision.**", "",
            "## Training data", "",
            f"- recipe: `{recipe.get('name', '?')}` (recipe sha256 `{manifest.get('recipe_sha256', '?')}`)",
            f"- manifest sha256: `{manifest_sha256(mixture)}` (medmix {manifest.get('medmix_version', '?')})",
            f"- rows: {manifest.get('total_rows', '?')}",
            f"- held out (decontaminated against): {held or 'none'}",
            "", terms_text(manifest),
            "## Files", "",
            "`vision/` (Hugging Face vision encoder + preprocessor), `projector.safetensors`, `adapter/` (peft LoRA), "
            "`tokenizer/`, `config.json`" + (", `llm_base/` (the random-init language model)"
                                               if (ckpt / "llm_base").is_dir() else "") + ".", "",
            "## Use", "",
            "```bash",
            f"pip install 'medmix[train,demo]=={__version__}'",
            (f"hf download {repo_id} --local-dir ckpt && medmix demo ckpt" if repo_id else "medmix demo CHECKPOINT"),
            "```", "",
            "The demo and `medmix eval vqa` build the prompt with the training template and normalize images the way "
            "training did, so answers in the demo are the answers evaluation scores.", ""]
    return meta, "\n".join(body)


def render(meta: dict[str, Any], body: str) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def copy_checkpoint(ckpt: Path, dest: Path) -> list[str]:
    """Copy the shipped parts of `ckpt` into `dest`; the relative file paths written."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        src = ckpt / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def _check_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise MedmixError(f"{out} exists and is not empty; give a new folder (nothing is overwritten)")


APP = '''"""A Hugging Face Space for a medmix checkpoint, written by `medmix demo --export-space`.

Locally: `pip install -r requirements.txt && python app.py` serves http://127.0.0.1:7860/.
On Spaces, GRADIO_SERVER_NAME=0.0.0.0 is set by the platform.
"""

import os
from pathlib import Path

from medmix.demo.gradio_page import create_demo, launch
from medmix.demo.answering import load_answerer

HERE = Path(__file__).resolve().parent
answerer = load_answerer(HERE / "checkpoints", device=os.environ.get("MEDMIX_DEVICE", "auto"),
                         dtype=os.environ.get("MEDMIX_DTYPE", "{dtype}"))
demo = create_demo(answerer, max_new_tokens={max_new_tokens})

if __name__ == "__main__":
    launch(demo, host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
           port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
'''


def export_space(ckpt: Path, mixture: Path, out: Path, *, dtype: str = "float32", max_new_tokens: int = 32,
                 log: Log = print) -> list[str]:
    """Write a Space folder: app.py, requirements.txt, README.md (Space header + model card), checkpoints/."""
    import gradio

    _check_out(out)
    meta, body = model_card(ckpt, mixture)
    space_meta = {"title": "medmix demo", "emoji": "🩺", "colorFrom": "blue", "colorTo": "indigo", "sdk": "gradio",
                  "sdk_version": gradio.__version__, "app_file": "app.py", "pinned": False,
                  "short_description": "Ask a medmix medical VLM checkpoint about an image", **meta}
    out.mkdir(parents=True, exist_ok=True)
    copy_checkpoint(ckpt, out / "checkpoints" / ckpt.name)
    (out / "checkpoints" / "latest").write_text(ckpt.name + "\n")
    (out / "app.py").write_text(APP.replace("{dtype}", dtype).replace("{max_new_tokens}", str(int(max_new_tokens))))
    (out / "requirements.txt").write_text(f"medmix[train,demo]=={__version__}\ngradio=={gradio.__version__}\n")
    (out / "README.md").write_text(render(space_meta, body))
    if meta["license"] == "other":
        (out / "LICENSE.md").write_text(terms_text(read_manifest(mixture)))
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    log(f"wrote a Space of {len(files)} file(s) to {out}; run it here with `python {out / 'app.py'}`")
    return files


def prepare_model_repo(ckpt: Path, mixture: Path, out: Path, *, repo_id: str) -> list[str]:
    """The model repo's files in `out`: the shipped checkpoint parts and README.md (the model card)."""
    _check_out(out)
    files = copy_checkpoint(ckpt, out)
    meta, body = model_card(ckpt, mixture, repo_id=repo_id)
    (out / "README.md").write_text(render(meta, body))
    if meta["license"] == "other":
        (out / "LICENSE.md").write_text(terms_text(read_manifest(mixture)))
    return sorted({*files, "README.md", *(["LICENSE.md"] if meta["license"] == "other" else [])})


def push_model(ckpt: Path, mixture: Path, repo_id: str, *, private: bool = False, revision: str | None = None,
               message: str = "Upload medmix checkpoint", log: Log = print, staging: Path | None = None) -> str:
    """Upload the checkpoint as a Hub model repo in one commit (weights first in the file list, card last)."""
    import tempfile

    from huggingface_hub import CommitOperationAdd, get_token

    from medmix.publish import hub

    hub._check_repo_id(repo_id)
    read_manifest(mixture)
    token = get_token()
    if not token:
        raise MedmixError("no Hugging Face token found: run `hf auth login` or set HF_TOKEN (a token with write "
                          "access), or use --dry-run DIR to write the repo without uploading")
    api = hub.make_api(token)
    call = hub._Scrub(token, repo_id)
    folder = Path(tempfile.mkdtemp(prefix=".medmix-push-model-", dir=staging))
    try:
        files = prepare_model_repo(ckpt, mixture, folder / "repo", repo_id=repo_id)
        call("create the repository", api.create_repo, repo_id, repo_type="model", private=private, exist_ok=True)
        if revision:
            call(f"create branch {revision!r}", api.create_branch, repo_id, repo_type="model", branch=revision,
                 exist_ok=True)
        ordered = [f for f in files if f not in ("README.md", "LICENSE.md")] + \
                  [f for f in ("LICENSE.md", "README.md") if f in files]
        ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / "repo" / f)) for f in ordered]
        size = sum((folder / "repo" / f).stat().st_size for f in files)
        log(f"uploading {len(files)} file(s), {size:,} bytes to {repo_id}" + (f" (branch {revision})" if revision
                                                                                else ""))
        call("commit", api.create_commit, repo_id, ops, commit_message=message, repo_type="model", revision=revision)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    endpoint = getattr(api, "endpoint", None) or "https://huggingface.co"
    return f"{endpoint.rstrip('/')}/{repo_id}" + (f"/tree/{revision}" if revision else "")
