"""Rich progress for long builds: one bar per stage, updated from the build's progress callback."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class BuildProgress:
    def __init__(self, console: Console) -> None:
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> BuildProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def update(self, stage: str, label: str, advance: int, total: int | None) -> None:
        key = f"{stage}:{label}" if stage == "fetch" else stage
        if key not in self._tasks:
            desc = f"fetch {label}" if stage == "fetch" else {"normalize": "normalize units", "mix": "index + dedup",
                                                               "write": "write shards"}.get(stage, stage)
            self._tasks[key] = self._progress.add_task(desc, total=total)
        task = self._tasks[key]
        if total is not None:
            self._progress.update(task, total=total)
        if stage == "write":
            self._progress.update(task, description=f"write shards ({label})")
        self._progress.advance(task, advance)
