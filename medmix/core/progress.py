"""Rich progress for long builds: one bar per stage, updated from the build's progress callback.

At millions of rows a stage runs for many minutes, so each bar shows its rate (rows, units or
shards per second) and an ETA, and `StageLog` says which stage is running: a line at each stage
start, one JSON line per stage start and end for programs (`medmix build --timings FILE`), and a
last line naming the stage when the build is killed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

UNITS = {"normalize": "units", "mix": "rows", "write:scatter": "units", "write:gather": "shards"}


class RateColumn(ProgressColumn):
    """Items per second over rich's recent window; blank until it has two samples."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("")
        return Text(f"{speed:,.1f} {task.fields.get('unit', 'items')}/s", style="progress.data.speed")


def stage_name(stage: str, label: str) -> str:
    """The stage a progress call belongs to: the write stage has two passes, scatter and gather."""
    return f"write:{label}" if stage == "write" else stage


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class _Tally:
    """One task as `PlainLines` reports it."""

    desc: str
    unit: str
    started: float
    said: float | None     # when its last line was said; None once its final line was
    done: int = 0
    total: int | None = None


class PlainLines:
    """Progress as plain lines for a log that is not a terminal (nohup, CI, a cluster job's
    stdout), where rich's bars are not drawn: a line per task at most every `every` seconds,
    and when it completes, with its rate and ETA. Why: a 40-minute build under nohup otherwise
    said "stage normalize started" and nothing more for 17 minutes."""

    def __init__(self, echo: Callable[[str], None], every: float = 30.0) -> None:
        self.echo, self.every = echo, every
        self._tasks: dict[str, _Tally] = {}

    def update(self, key: str, desc: str, unit: str, advance: int, total: int | None) -> None:
        now = time.monotonic()
        t = self._tasks.setdefault(key, _Tally(desc, unit, started=now, said=now))
        t.done += advance
        if total is not None:
            t.total = total
        if t.said is None:  # its final line was said
            return
        finished = t.total is not None and t.done >= t.total
        if finished or now - t.said >= self.every:
            self.echo(self.line(key, now))
            t.said = None if finished else now

    def line(self, key: str, now: float) -> str:
        t = self._tasks[key]
        elapsed = max(now - t.started, 1e-9)
        rate = t.done / elapsed
        parts = [f"{t.desc}: {t.done:,}" + (f"/{t.total:,} ({100 * t.done / t.total:.0f}%)" if t.total else "")]
        if elapsed >= 1.0:  # a rate over less than a second says nothing (work reused from the cache)
            parts.append(f"{rate:,.1f} {t.unit}/s")
        parts.append(f"{_clock(elapsed)} elapsed")
        if t.total and rate > 0 and t.done < t.total:
            parts.append(f"ETA {_clock((t.total - t.done) / rate)}")
        return ", ".join(parts)


class BuildProgress:
    def __init__(self, console: Console, every: float = 30.0, plain: bool | None = None) -> None:
        # a log file or pipe also gets plain lines (`PlainLines`); `plain` overrides the guess
        plain = not console.is_terminal if plain is None else plain
        self._plain = PlainLines(console.print, every) if plain else None
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                  TimeRemainingColumn(), console=console, transient=False)
        self._tasks: dict[str, int] = {}
        self._meta: dict[str, tuple[str, str]] = {}

    def __enter__(self) -> BuildProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def update(self, stage: str, label: str, advance: int, total: int | None) -> None:
        key = f"{stage}:{label}" if stage in ("fetch", "write") else stage
        if key not in self._tasks:
            desc = f"fetch {label}" if stage == "fetch" else {
                "normalize": "normalize units", "mix": "index + dedup", "write": f"write shards ({label})",
                "finish": "removed rows + manifest"}.get(stage, stage)
            unit = UNITS.get(stage_name(stage, label), "items")
            self._tasks[key] = self._progress.add_task(desc, total=total, unit=unit)
            self._meta[key] = (desc, unit)
        task = self._tasks[key]
        if total is not None:
            self._progress.update(task, total=total)
        self._progress.advance(task, advance)
        if self._plain is not None:
            self._plain.update(key, *self._meta[key], advance, total)


class StageLog:
    """Which stage the build is in, for people and programs.

    Called with every progress event; on a change of stage it ends the previous one and starts
    the next: `echo("stage NAME started")`, and with `path`, JSON lines
    {"event": "start"|"end"|"killed", "stage", "unix", "seconds"} appended and flushed at once, so
    a reader (benchmarks/rehearsal.py) sees them while the build runs and after it is killed.
    """

    def __init__(self, echo: Callable[[str], None], path: Path | None = None,
                 last_words: Callable[[str], None] | None = None) -> None:
        self.echo = echo
        self.last_words = last_words or echo
        self.current: str | None = None
        self._t0 = 0.0
        # one unbuffered O_APPEND write per line: a kill's line, written from the signal handler,
        # cannot land inside a half-written buffered one (a BufferedWriter re-entered raises)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path is not None else None

    def _emit(self, event: str, **extra) -> None:
        if self._fd is not None:
            line = json.dumps({"event": event, "stage": self.current, "unix": round(time.time(), 3), **extra})
            os.write(self._fd, (line + "\n").encode())

    def _end(self) -> None:
        if self.current is not None:
            self._emit("end", seconds=round(time.monotonic() - self._t0, 3))
            self.current = None

    def __call__(self, stage: str, label: str, advance: int, total: int | None) -> None:
        name = stage_name(stage, label)
        if name != self.current:
            self._end()
            self.current, self._t0 = name, time.monotonic()
            self._emit("start")
            self.echo(f"stage {name} started")

    def killed(self, signal_name: str) -> None:
        """The last words of a killed build: which stage, after how long."""
        where = self.current or "setup"
        secs = time.monotonic() - self._t0 if self.current else 0.0
        self._emit("killed", signal=signal_name, seconds=round(secs, 3))
        self.last_words(f"medmix build: {signal_name} during stage {where} (after {secs:.1f} s in it)")

    def close(self) -> None:
        self._end()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
