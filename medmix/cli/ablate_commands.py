"""`medmix ablate`: the command-line shell over `medmix.ablate.runner.run_ablation`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medmix.cli.common import FromOpt, err_console, fail, out_console, parse_from
from medmix.core.errors import MedmixError


def ablate_command(
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="built-in recipe name or a YAML path")],
    out: Annotated[Path, typer.Option("--out", "-o", help="ablation folder (resumed when it holds this "
                                      "ablation)")],
    plan: Annotated[str, typer.Option("--plan", help="loo (leave one out) or regmix[:N] (N Dirichlet variants + "
                                      "base, stratified, temperature)")] = "loo",
    proxy: Annotated[str, typer.Option("--proxy", help="trainer config: proxy-tiny (CPU), proxy-small (GPU, "
                                       "~130M) or a YAML file")] = "proxy-tiny",
    tokens: Annotated[int, typer.Option("--tokens", min=1, help="training tokens per variant (sets the "
                                        "steps)")] = 20_000,
    cache: Annotated[Path, typer.Option("--cache", help="download + normalized-source cache, shared by every "
                                        "variant")] = Path(".medmix-cache"),
    executor: Annotated[str, typer.Option("--executor", help="local, or ray (variants as Ray tasks, one GPU "
                                          "each when the cluster has GPUs)")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to join")] = None,
    eval_sources: Annotated[str | None, typer.Option("--eval-sources", help="comma-separated sources whose held-out "
                                                     "loss is the metric (default: all, macro-averaged)")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="held-out choice, Dirichlet draws, proxy "
                                      "training")] = 0,
    heldout_fraction: Annotated[float, typer.Option("--heldout-fraction", help="share of each source's rows "
                                                    "considered for held-out")] = 0.05,
    heldout_cap: Annotated[int, typer.Option("--heldout-cap", min=1, help="most held-out rows per "
                                             "source")] = 500,
    from_: FromOpt = None,
    accept_license: Annotated[list[str] | None, typer.Option("--accept-license",
                                                             help="accept a non-commercial/gated license id")] = None,
    cpu_threads: Annotated[int | None, typer.Option("--cpu-threads", min=1, help="torch threads on CPU (proxy-tiny's "
                                                    "steps are per-op overhead: 1 thread ran 3.6x faster on 2 busy "
                                                    "cores)")] = None,
    override: Annotated[list[str] | None, typer.Option("--set", help="proxy config key=value (e.g. "
                                                       "train.lr=1e-3)")] = None,
) -> None:
    """Leave-one-out or RegMix ablation with proxy models: contributions, report, suggested.yaml."""
    from medmix.ablate.runner import AblationOptions, run_ablation

    if cpu_threads:
        import torch

        torch.set_num_threads(cpu_threads)
    if executor not in ("local", "ray"):
        fail(MedmixError(f"--executor {executor!r}: use local or ray"))
    opts = AblationOptions(
        recipe=recipe, plan=plan, proxy=proxy, tokens=tokens, out=out, cache=cache, executor=executor,
        address=address, seed=seed, heldout_fraction=heldout_fraction, heldout_cap=heldout_cap,
        eval_sources=tuple(s.strip() for s in (eval_sources or "").split(",") if s.strip()),
        from_dirs=parse_from(from_), accept=tuple(accept_license or ()), proxy_overrides=tuple(override or ()))
    try:
        summary = run_ablation(opts, log=lambda m: err_console.print(m, highlight=False, soft_wrap=True))
    except MedmixError as exc:
        fail(exc)
    s = summary["suggested"]
    out_console.print(f"wrote {out}/report.md and {out}/suggested.yaml; suggested metric {s['metric']:.4f} "
                      f"(base {summary['variants'][0]['metric']:.4f})", highlight=False)
