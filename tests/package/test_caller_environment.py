"""The suite passes whatever HF_*/AWS_* variables the caller's shell exports (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_this_session_sees_a_neutral_environment():
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE is False
    # (AWS_* may be set by the suite's own S3 server fixture, so only the Hub's are checked here)
    assert "HF_TOKEN" not in os.environ and "HF_ENDPOINT" not in os.environ
    assert os.environ["HF_HOME"] != str(Path.home() / ".cache" / "huggingface")


def test_fake_hub_tests_pass_with_an_offline_shell(tmp_path):
    """The test that failed on an offline cluster, run in a shell that exports what such clusters export."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_not_a_real_token", AWS_PROFILE="nobody")
    test = "tests/sources/test_source_pmc_oa.py::test_medmix_lock_then_a_build_without_ncbi"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test,
                          f"--basetemp={tmp_path / 'inner'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
