"""`medmix eval vqa` and `medmix eval classify`: thin typer shells over vqa.py and classify.py.

Plain functions with `Annotated` typer metadata, so the main CLI registers them
(`eval_app.command("vqa")(eval_vqa)`) and Python code can call them with ordinary defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medmix.cli.common import FromOpt, MirrorOpt, err_console, fail, out_console, parse_from
from medmix.core.errors import MedmixError

CacheOpt = Annotated[Path, typer.Option("--cache", help="download + decoded-benchmark cache")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (cuda if available), cpu, cuda, cuda:1, ...")]


def eval_classify(
    encoders: Annotated[list[str], typer.Option("--encoder", "-e", help="encoder name: hf:NAME|PATH, medmix:CKPT, "
                                                 "open_clip:MODEL@PRETRAINED, scratch[:NAME], or a local folder")],
    benchmarks: Annotated[list[str] | None, typer.Option("--benchmark", "-b", help="default: all 8")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for classification.{json,md,png}")] = Path("eval"),
    cache: CacheOpt = Path(".medmix-cache"),
    from_: FromOpt = None,
    mirror: MirrorOpt = None,
    mode: Annotated[str, typer.Option("--mode", help="linear (frozen + logistic regression) or finetune")] = "linear",
    max_train: Annotated[int | None, typer.Option("--max-train", min=1, help="about this many training rows "
                                                     "per benchmark (seeded); default: all")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="fine-tuning epochs (finetune, scratch)")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Transfer encoders to the classification benchmarks under one fixed recipe; macro-F1 side by side."""
    from medmix.evaluation.classify import ProbeRecipe, run_classification
    from medmix.evaluation.eval_data import fetch_split_files
    from medmix.evaluation.presentation import rich_table, write_reports
    from medmix.evaluation.suite import BENCHMARKS

    try:
        recipe = ProbeRecipe(mode=mode, max_train=max_train, epochs=epochs, batch_size=batch_size, seed=seed)
        from_dirs = parse_from(from_)

        def files_for(source, splits):  # type: ignore[no-untyped-def]
            return fetch_split_files(source, splits, cache_dir=cache, from_dir=from_dirs.get(source.name),
                                     mirror=mirror)

        report = run_classification(list(encoders), list(benchmarks or BENCHMARKS), recipe, files_for=files_for,
                                    cache_dir=cache, device=device, log=lambda m: err_console.print(m, style="dim",
                                                                                                markup=False))
        paths = write_reports(report, out)
    except MedmixError as exc:
        fail(exc)
    out_console.print(rich_table(report))
    err_console.print("wrote " + ", ".join(str(p) for p in paths.values()), markup=False)


def eval_vqa(
    model: Annotated[Path, typer.Argument(help="a medmix checkpoint folder (or a run folder holding checkpoints/)")],
    dataset: Annotated[list[str], typer.Option("--dataset", "-d", help="pathvqa, vqa_rad, slake or vqa_med_2019; "
                                                "repeat for several")],
    split: Annotated[str, typer.Option("--split", help="an evaluation split of the dataset")] = "test",
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for <dataset>-<split>.vqa.json and "
                                      "predictions")] = Path("eval"),
    cache: CacheOpt = Path(".medmix-cache"),
    from_: FromOpt = None,
    mirror: MirrorOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 32,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="score only the first N questions")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Greedy VQA on held-out test splits: BLEU-1, closed-question accuracy, open-question recall."""
    from medmix.evaluation.eval_data import fetch_split_files
    from medmix.evaluation.vqa import evaluate_dataset, load_generate, rich_table, vqa_source

    names = [dataset] if isinstance(dataset, str) else list(dataset)
    try:
        from_dirs = parse_from(from_)
        sources = [vqa_source(name) for name in names]  # unknown names fail before the model loads
        generate = load_generate(model, device)
        results = []
        for source in sources:
            files = fetch_split_files(source, (split,), cache_dir=cache, from_dir=from_dirs.get(source.name),
                                      mirror=mirror)
            err_console.print(f"{source.name}: answering {split} questions", style="dim", markup=False)
            results.append(evaluate_dataset(generate, source, files=files, split=split, batch_size=batch_size,
                                            max_new_tokens=max_new_tokens, limit=limit, out_dir=out,
                                            config={"model": str(model)}))
    except MedmixError as exc:
        fail(exc)
    out_console.print(rich_table(results))
    err_console.print(f"wrote {out}", markup=False)
