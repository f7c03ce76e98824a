"""The `medmix` command line: one command table (`main`), one style (typer + Annotated), one
error exit; the extra each command needs is declared once in `medmix.core.extras`. Every command is
a thin shell over a library function in another package.

Modules:
- `main`: The `medmix` command line (typer). Each command is a thin shell over a library function.
- `common`: What every `medmix` command group shares: the two consoles, the one error exit, the extra check,
- `build_summary`: What a person sees after a build: per-source counts and the decontamination table.
- `doctor_command`: `medmix doctor`: the command over `medmix.doctor.check_recipe`, and its rich table.
- `push_command`: `medmix push`: a typer-compatible command function over `medmix.publish.hub`, which it sits beside.
- `stats_command`: `medmix stats`: a typer-compatible command function and its rich tables.
- `eval_commands`: `medmix eval vqa` and `medmix eval classify`: thin typer shells over vqa.py and classify.py.
- `export_command`: `medmix export`: a typer command over `medmix.export.export`, registered by medmix/cli/main.py.
- `demo_commands`: `medmix demo` and `medmix push-model`: thin typer shells over `medmix.demo`.
- `ablate_commands`: `medmix ablate`: the command-line shell over `medmix.ablate.runner.run_ablation`.
"""
