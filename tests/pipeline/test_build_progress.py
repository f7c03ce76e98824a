"""Progress a person can trust on a long build (issue 24, item 5).

A build of millions of rows runs for an hour: each stage's bar must show its rate and an ETA, and
a build killed mid-way must leave a log that says which stage it died in (the rich bars are gone
with the terminal; the last line is what a person reads in a batch job's log).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from medmix.core.progress import BuildProgress, StageLog


def test_every_stage_bar_shows_a_rate_and_an_eta() -> None:
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False, color_system=None)
    with BuildProgress(console, plain=False) as bars:
        bars.update("fetch", "vqa_rad", 0, None)
        bars.update("fetch", "vqa_rad", 1, 1)
        for stage, label, total in (("normalize", "units", 4), ("mix", "index", 400), ("write", "scatter", 4),
                                    ("write", "gather", 2)):
            bars.update(stage, label, 0, total)
            for _ in range(2):
                time.sleep(0.02)
                bars.update(stage, label, total // 2, total)
    text = out.getvalue()
    for unit in ("units/s", "rows/s", "shards/s"):
        assert unit in text, text
    lines = [line for line in text.splitlines() if any(k in line for k in ("normalize", "index", "write shards"))]
    assert len(lines) == 4 and all("ETA" in line for line in lines), text


def test_a_log_that_is_no_terminal_gets_plain_lines_with_rate_and_eta(monkeypatch) -> None:
    """Under nohup or in a batch job's log the bars are not drawn: plain lines say the same."""
    import medmix.core.progress as progress_mod

    now = [100.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: now[0])
    said: list[str] = []
    lines = progress_mod.PlainLines(said.append, every=30.0)
    lines.update("normalize", "normalize units", "units", 0, 300)
    now[0] += 10
    lines.update("normalize", "normalize units", "units", 50, None)   # 10 s: not yet
    now[0] += 30
    lines.update("normalize", "normalize units", "units", 50, None)   # 40 s, 100 of 300: 2.5/s, 80 s left
    assert said == ["normalize units: 100/300 (33%), 2.5 units/s, 0:40 elapsed, ETA 1:20"]
    now[0] += 80
    lines.update("normalize", "normalize units", "units", 200, None)  # done: said at once, without an ETA
    now[0] += 1
    lines.update("normalize", "normalize units", "units", 0, None)    # nothing more once done
    assert said[1:] == ["normalize units: 300/300 (100%), 2.5 units/s, 2:00 elapsed"]
    lines.update("fetch", "fetch a", "items", 1, 1)  # done at once (reused): no rate over 0 s
    assert said[-1] == "fetch a: 1/1 (100%), 0:00 elapsed"
    out = io.StringIO()
    with BuildProgress(Console(file=out, width=160, force_terminal=False, color_system=None), every=0.0) as bars:
        bars.update("mix", "index", 10, 40)
    assert "index + dedup: 10/40 (25%)" in out.getvalue()


def test_stage_log_writes_start_end_and_killed(tmp_path: Path) -> None:
    said: list[str] = []
    log = StageLog(said.append, tmp_path / "t.jsonl")
    log("fetch", "a", 0, None)
    log("fetch", "b", 1, 1)      # another source: still the fetch stage
    log("normalize", "units", 0, 3)
    log("write", "scatter", 1, 2)
    log.killed("SIGTERM")
    events = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [(e["event"], e["stage"]) for e in events] == [
        ("start", "fetch"), ("end", "fetch"), ("start", "normalize"), ("end", "normalize"),
        ("start", "write:scatter"), ("killed", "write:scatter")]
    assert said[-1].startswith("medmix build: SIGTERM during stage write:scatter")


def _folder(root: Path, n: int = 24, side: int = 1800) -> Path:
    """Large JPEGs (resized to the recipe's max_side): normalize takes seconds, so a kill lands in it."""
    rng = np.random.default_rng(0)
    root.mkdir()
    rows = ["file_name,answer"]
    for i in range(n):
        grid = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(grid).resize((side, side)).save(root / f"{i:03d}.jpg", quality=90)
        rows.append(f"{i:03d}.jpg,a figure of case {i} with its own caption")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def test_killed_build_names_its_stage(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "imgs")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: killed
        image: {{max_side: 256, encode: jpeg, burned_in_text: 'off'}}
        sources:
          figs: {{adapter: local, from: '{folder}', options: {{domain: radiology, task: caption,
                  license: CC-BY-4.0}}}}
        """))
    timings = tmp_path / "timings.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "medmix.cli", "build", "--recipe", str(recipe), "--out",
                             str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--workers", "1",
                             "--timings", str(timings)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if timings.exists() and '"stage": "normalize"' in timings.read_text():
            break
        time.sleep(0.02)
    else:
        proc.kill()
        raise AssertionError("the build never reached normalize: " + proc.communicate()[0].decode()[-2000:])
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == -signal.SIGTERM  # still dies of the signal, as before
    assert "SIGTERM during stage normalize" in output, output[-2000:]
    last = json.loads(timings.read_text().splitlines()[-1])
    assert last["event"] == "killed" and last["stage"] == "normalize" and last["signal"] == "SIGTERM"
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_kill_message_is_not_held_in_a_rich_buffer(capfd) -> None:
    """A signal that lands inside a console print nests the handler's print into rich's buffer,
    which the kill then never flushes; the last words go to fd 2 directly instead."""
    from medmix.cli.main import _raw_stderr

    console = Console(file=sys.stderr, force_terminal=False)
    with console:  # rich's buffer, as during a print
        console.print("held")
        _raw_stderr("medmix build: SIGTERM during stage normalize")
        err = capfd.readouterr().err
    assert "SIGTERM during stage normalize" in err and "held" not in err
