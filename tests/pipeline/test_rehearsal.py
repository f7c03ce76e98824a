"""The tiny rehearsal of the openmedq-3.35m build (issue 24): every stage together, checked.

`benchmarks/rehearsal.py --scale 0.001` writes ~3,700 upstream rows shaped like the recipe's 14
sources, with planted copies and evaluation contamination, builds them with `medmix build` in a
subprocess and verifies the result. Run here so a change that breaks any stage's interplay (a
missed planted copy, a removed distinct row, a count the manifest and `medmix stats` disagree on,
a shard `datasets` cannot read) fails the suite, not the next hour-long build. With `--rebuilds` it
then rebuilds on the same cache with one weight changed (nothing normalized again) and with one
upstream image changed (only that source normalized again).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(480)
def test_tiny_rehearsal_passes_every_check(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rehearsal.py"), "--scale", "0.001",
                          "--workers", "2", "--dir", str(tmp_path / "work"), "--json", str(summary), "--rebuilds"],
                         capture_output=True, text=True, env=env, timeout=230)
    elapsed = time.monotonic() - t0
    assert summary.exists(), res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(summary.read_text())
    failed = {k: c["detail"] for k, c in result["checks"].items() if not c["ok"]}
    assert not failed and result["passed"] and res.returncode == 0, failed
    # the checks that carry the claims, by name: a renamed or dropped check fails here
    for name in ("planted duplicate all caught", "planted eval_image all caught", "planted eval_text all caught",
                 "nothing distinct removed as duplicate", "nothing distinct removed as eval_image",
                 "nothing distinct removed as eval_text", "normalized rows per source exact, none quarantined",
                 "polars reads every shard", "datasets reads every shard, images decode",
                 "medmix stats counts equal the manifest's"):
        assert result["checks"][name]["ok"], name
    # something was planted of every kind, so "all caught" is not vacuous
    assert all(n > 0 for n in result["planted"].values()), result["planted"]
    stages = [s["stage"] for s in result["build"]["stages"]]
    assert stages[:2] == ["setup", "fetch"] and {"normalize", "mix", "write:scatter", "write:gather",
                                                  "finish"} <= set(stages), stages
    normalize = next(s for s in result["build"]["stages"] if s["stage"] == "normalize")
    assert normalize["seconds"] > 0 and normalize["worker_peak_rss"] > 0 and normalize["cache_bytes"] > 0
    weight = {s["stage"] for s in result["rebuilds"]["weight"]["stages"] if s["seconds"] is not None}
    assert {"mix", "write:scatter"} <= weight, weight  # the rebuild still mixes and writes
    assert not result["upstream_reused"]
    print(f"tiny rehearsal: {elapsed:.1f} s end to end")  # issue 24: under a minute on 2 quiet cores

    # --keep-upstream: the same plan builds again from the upstream on disk, after the rebuild
    # re-encoded one of its images (given back first, or the first build's checks could not pass)
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rehearsal.py"), "--scale", "0.001",
                            "--workers", "2", "--dir", str(tmp_path / "work"), "--json", str(summary),
                            "--keep-upstream"], capture_output=True, text=True, env=env, timeout=230)
    second = json.loads(summary.read_text())
    assert again.returncode == 0 and second["passed"] and second["upstream_reused"], again.stdout[-3000:]
    assert not (tmp_path / "work" / "out-upstream").exists() and second["build"]["stages"][2]["stage"] == "normalize"
