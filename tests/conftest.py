"""Shared pytest fixtures.

`http_server` is a started `FixtureServer` on 127.0.0.1 (see tests/httpserver.py). Every test
that downloads goes through it: this machine, like a user's CI, cannot reach the real hosts,
and tests must never try.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The suite must pass whatever the caller's shell exports. Offline clusters set HF_HUB_OFFLINE=1,
# which made huggingface_hub refuse the fake Hub on 127.0.0.1; a logged-in user's token or an
# AWS profile would leak into the push and S3 tests. Cleared here, before any test module imports
# huggingface_hub (it reads its constants at import time), and inherited by every subprocess.
_CALLER_PREFIXES = ("HF_", "HUGGINGFACE_", "HUGGING_FACE_", "TRANSFORMERS_", "DATASETS_", "AWS_", "BOTO_",
                    "MEDMIX_", "RAY_ADDRESS", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
for _name in [n for n in os.environ if n.startswith(_CALLER_PREFIXES) and not n.startswith("MEDMIX_TEST_")]:
    del os.environ[_name]
_HF_HOME = tempfile.mkdtemp(prefix="medmix-tests-hf-")  # no cached token or datasets of the caller's
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ.update(HF_HOME=_HF_HOME, HF_HUB_DISABLE_TELEMETRY="1", AWS_CONFIG_FILE=os.devnull,
                  AWS_SHARED_CREDENTIALS_FILE=os.devnull)

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # `from httpserver import FixtureServer` in any test

from httpserver import FixtureServer  # noqa: E402


@pytest.fixture
def http_server() -> Iterator[FixtureServer]:
    """A fresh server per test: cheap to start, and no fixture bytes or faults leak between tests."""
    with FixtureServer() as server:
        yield server


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by pip's playwright (never `playwright install`), one per module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: install Debian's chromium (apt-get install -y chromium); .ci/run does")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()
