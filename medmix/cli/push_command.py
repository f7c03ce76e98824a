"""`medmix push`: a typer-compatible command function over `medmix.publish.hub`.

Registered by cli.py (`app.command("push")(push_command)`). Hub warnings (a forced push of rows
that may not be redistributed) print in bold red on stderr; errors exit with status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medmix.cli.common import err_console, fail, out_console
from medmix.core.errors import MedmixError


def push_command(
    path: Annotated[Path, typer.Argument(help="a mixture folder written by `medmix build`")],
    repo_id: Annotated[str, typer.Argument(help="Hub dataset repository, e.g. my-org/medmix-demo")],
    private: Annotated[bool, typer.Option("--private", help="create the repository as private")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="branch to push to (created if "
                                                 "missing)")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="commit message")] = "Upload medmix mixture",
    dry_run: Annotated[Path | None, typer.Option("--dry-run", help="write the folder that would be uploaded here; "
                                                 "upload nothing")] = None,
    exclude_nonredistributable: Annotated[bool, typer.Option(
        "--exclude-nonredistributable", help="drop rows whose license or source forbids redistribution")] = False,
    force_nonredistributable: Annotated[bool, typer.Option(
        "--force-nonredistributable", help="push them anyway (you hold the rights; loud warning)")] = False,
) -> None:
    """Upload a mixture to the Hugging Face Hub with a license-aware dataset card (Parquet, one config per source)."""
    from medmix.publish import hub

    if exclude_nonredistributable and force_nonredistributable:
        fail(MedmixError("--exclude-nonredistributable and --force-nonredistributable contradict each other; "
                          "pick one"))
    policy = "exclude" if exclude_nonredistributable else "force" if force_nonredistributable else "refuse"
    try:
        if dry_run is not None:
            layout = hub.prepare(path, dry_run, repo_id=repo_id, policy=policy, log=_log)
            out_console.print(f"dry run: {len(layout.files)} file(s), {layout.bytes:,} bytes in {dry_run} "
                      f"(nothing uploaded)", highlight=False, markup=False)
            return
        url = hub.push(path, repo_id, policy=policy, private=private, revision=revision, message=message, log=_log)
    except MedmixError as exc:
        fail(exc)
    out_console.print(f"pushed to {url}", highlight=False, markup=False)


def _log(message: str) -> None:
    style = "bold red" if message.startswith("WARNING") else None
    err_console.print(message, style=style, highlight=False, soft_wrap=True, markup=False)
