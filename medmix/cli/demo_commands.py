"""`medmix demo` and `medmix push-model`: thin typer shells over `medmix.demo`.

Registered by medmix/cli/main.py. Gradio is imported only inside the commands, so `medmix --help` works
without the `demo` extra, and a missing extra is one line saying what to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medmix.cli.common import FromOpt, err_console, fail, out_console, parse_from
from medmix.core.errors import MedmixError

RunArg = Annotated[Path, typer.Argument(help="a run folder (its latest checkpoint) or a checkpoints/step-N folder")]
MixtureOpt = Annotated[Path | None, typer.Option("--mixture", help="the mixture the run trained on: held-out "
                                                 "examples for the page, license terms for cards")]


def _warn(message: str) -> None:
    err_console.print(message, style="yellow", highlight=False, soft_wrap=True)


def demo_command(
    run: RunArg,
    mixture: MixtureOpt = None,
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port")] = 7860,
    host: Annotated[str, typer.Option("--host", help="address to bind; anything but loopback is reachable by "
                                      "others")] = "127.0.0.1",
    device: Annotated[str, typer.Option("--device", help="auto (cuda if available), cpu, cuda, cuda:1, ...")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="bfloat16, float16 or float32")] = "float32",
    share: Annotated[bool, typer.Option("--share", help="also open a public gradio.live link (off by default: "
                                        "anyone with the link can use the model)")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="default answer length (eval vqa's "
                                                "default)")] = 32,
    cache: Annotated[Path, typer.Option("--cache", help="download cache holding the evaluation splits (gallery)")]
    = Path(".medmix-cache"),
    from_: FromOpt = None,
    export_space: Annotated[Path | None, typer.Option("--export-space", help="write a Hugging Face Space folder "
                                                      "here (needs --mixture for the license terms); serve "
                                                      "nothing")] = None,
) -> None:
    """Ask a trained checkpoint about an image in the browser (Gradio): streamed greedy answers, held-out examples."""
    from medmix.demo.answering import load_answerer, pick_checkpoint, resolve_dtype
    from medmix.view.webapp import is_loopback

    try:
        resolve_dtype(dtype)
        if export_space is not None:
            if mixture is None:
                raise MedmixError("--export-space needs --mixture DIR: the Space's card states the license terms of "
                                  "the data the model was trained on")
            from medmix.demo.space import export_space as write_space

            write_space(pick_checkpoint(run), mixture, export_space, dtype=dtype, max_new_tokens=max_new_tokens,
                        log=lambda m: err_console.print(m, highlight=False))
            return
        from medmix.demo.gradio_page import create_demo, launch

        if not is_loopback(host):
            _warn(f"warning: serving on {host}, reachable from other machines; anyone who can connect can run the "
                  f"model and see its answers (use --host 127.0.0.1 to keep it local)")
        if share:
            _warn("warning: --share opens a public gradio.live link; anyone with it can use this model")
        examples = []
        if mixture is not None:
            from medmix.demo.gallery import held_out

            examples = held_out(mixture, cache=cache, from_dirs=parse_from(from_), log=_warn)
            err_console.print(f"gallery: {len(examples)} held-out example(s) from {mixture}", highlight=False)
        answerer = load_answerer(run, device=device, dtype=dtype)
        err_console.print(f"medmix demo: {answerer.describe()}", highlight=False)
        demo = create_demo(answerer, examples, max_new_tokens=max_new_tokens)
        shown = f"[{host}]" if ":" in host else host
        err_console.print(f"serving at http://{shown}:{port}/ (Ctrl+C stops)", highlight=False)
        launch(demo, host=host, port=port, share=share)
    except MedmixError as exc:
        fail(exc)


def push_model_command(
    run: RunArg,
    repo_id: Annotated[str, typer.Argument(help="Hub model repository, e.g. my-org/medmix-tiny")],
    mixture: Annotated[Path, typer.Option("--mixture", help="the mixture the run trained on (its recipe, "
                                          "manifest digest and licenses go on the card)")],
    private: Annotated[bool, typer.Option("--private", help="create the repository as private")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="branch to push to (created if missing)")]
    = None,
    message: Annotated[str, typer.Option("--message", "-m", help="commit message")] = "Upload medmix checkpoint",
    dry_run: Annotated[Path | None, typer.Option("--dry-run", help="write the repo's files here; upload nothing")]
    = None,
) -> None:
    """Upload a checkpoint (vision/, projector, adapter/, tokenizer/) as a Hub model repo with a model card."""
    from medmix.demo.answering import pick_checkpoint
    from medmix.demo.space import prepare_model_repo, push_model

    try:
        ckpt = pick_checkpoint(run)
        if dry_run is not None:
            files = prepare_model_repo(ckpt, mixture, dry_run, repo_id=repo_id)
            out_console.print(f"dry run: {len(files)} file(s) of {ckpt} in {dry_run} (nothing uploaded)",
                              highlight=False)
            return
        url = push_model(ckpt, mixture, repo_id, private=private, revision=revision, message=message,
                         log=lambda m: err_console.print(m, highlight=False))
    except MedmixError as exc:
        fail(exc)
    out_console.print(f"pushed {ckpt.name} to {url}", highlight=False)
