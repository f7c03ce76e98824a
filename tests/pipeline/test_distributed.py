"""Beyond one machine: `--executor ray`, mixtures and caches on S3, and the streaming loader.

Real components, started here: one local Ray cluster for the session (2 CPUs), and moto's S3
server on 127.0.0.1 (tests/s3server.py). Every build is the embedded demo recipe (offline, ~1 s
locally), so the file stays well under a minute on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from medmix.core.errors import MedmixError
from medmix.pipeline import BuildOptions, build
from medmix.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RAY_DAEMONS = ("raylet", "gcs_server")


def _ray_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "|".join(RAY_DAEMONS)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> Iterator:
    from s3server import S3Server

    server = S3Server()
    env = {**server.env, "MEDMIX_SCRATCH": str(tmp_path_factory.mktemp("scratch"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # what a user exports; Ray workers started later inherit it
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3, tmp_path_factory) -> Iterator:
    ray = pytest.importorskip("ray")  # the ray extra is installed in CI; see test_missing_ray_names_the_extra
    before = _ray_pids()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    temp = f"/tmp/rt-{os.getpid()}"  # Ray's socket paths must stay short
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level="WARNING")
    yield ray
    ray.shutdown()
    deadline = time.time() + 20
    while (left := _ray_pids() - before) and time.time() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray processes left behind after shutdown: {sorted(left)}"


def _digests(out: Path) -> dict[str, str]:
    """sha256 of every file but the manifest (its build_info holds timings; compared via _stable)."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def _s3_digests(prefix: str) -> dict[str, str]:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    return {f[len(prefix) + 1:]: hashlib.sha256(fs.cat_file(f)).hexdigest() for f in sorted(fs.find(prefix))
            if not f.endswith("/manifest.json")}


def _stable(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "build_info"}


def _build(out, cache, **kw) -> dict:
    return build(load_recipe("demo"), BuildOptions(out=out, cache=cache, **kw), log=lambda m: None)


@pytest.fixture(scope="session")
def local_demo(tmp_path_factory) -> tuple[Path, dict, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("local")
    manifest = _build(tmp / "out", tmp / "cache")
    return tmp / "out", manifest, _digests(tmp / "out")


def test_ray_build_is_byte_identical_to_local_on_one_and_two_cpus(ray_cluster, local_demo, tmp_path):
    _, manifest, digests = local_demo
    # one task in flight = Ray on 1 CPU (one session holds one cluster; README documents --workers for ray)
    for name, in_flight in (("one", 1), ("two", 2)):
        got = _build(tmp_path / name, tmp_path / f"cache-{name}", executor="ray", workers=in_flight)
        assert got["build_info"]["executor"] == "ray"
        assert _stable(got) == _stable(manifest)
        assert _digests(tmp_path / name) == digests, name


def _slow_recipe(tmp: Path, images: int = 240):
    """A local-folder source of noisy images, forced to re-encode: one unit of ~1 s, long enough
    to be caught mid-unit on any machine."""
    import numpy as np
    from PIL import Image

    from medmix.recipe import parse_recipe

    folder = tmp / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(folder / f"img_{i:04d}.png")
    return parse_recipe(f"""name: slow
image: {{max_side: null, encode: jpeg}}
dedup: {{exact: false, image_distance: null, text_threshold: null}}
sources:
  imgs:
    adapter: local
    from: {folder}
    options: {{domain: radiology, license: CC0-1.0}}
""", str(tmp / "slow.yaml"))


def test_ray_worker_killed_mid_unit_is_retried_with_identical_output(ray_cluster, tmp_path):
    import psutil

    recipe = _slow_recipe(tmp_path)
    want = build(recipe, BuildOptions(out=tmp_path / "local", cache=tmp_path / "cache-local"), log=lambda m: None)
    killed: list[int] = []
    done = threading.Event()

    def killer() -> None:  # SIGKILL the worker process seen running the normalize task
        while not done.is_set() and not killed:
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if " ".join(proc.info["cmdline"] or []).startswith("ray::_run_job"):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed.append(proc.info["pid"])
                    break
            time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        got = build(recipe, BuildOptions(out=tmp_path / "ray", cache=tmp_path / "cache-ray", executor="ray",
                                         workers=2), log=lambda m: None)
    finally:
        done.set()
        thread.join()
    assert killed, "no normalize task was caught running"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert _stable(got) == _stable(want)
    assert _digests(tmp_path / "ray") == _digests(tmp_path / "local")


def test_s3_build_on_ray_then_stream_and_load_from_the_bucket(ray_cluster, s3, local_demo, tmp_path):
    from medmix import MixtureDataset, load

    local_out, manifest, digests = local_demo
    s3.make_bucket("mix-ray")
    got = _build("s3://mix-ray/demo", "s3://mix-ray/cache", executor="ray", workers=2)
    assert _stable(got) == _stable(manifest)
    remote = _s3_digests("mix-ray/demo")
    assert remote == digests
    assert not [k for k in remote if ".medmix-tmp" in k], "temporary keys left visible"
    # the normalized units live in the bucket: a fresh machine (empty scratch) reuses them all
    units = [k for k in _s3_digests("mix-ray/cache") if k.startswith("normalized/") and k.endswith(".json")]
    assert len(units) == 7

    # streaming: every rank × worker split of the bucket's mixture equals the local one's
    # a budget of a few row groups (image bytes are stored uncompressed, so a demo row group is ~50-90 KB):
    # the cache must stay within it while the reader walks the whole slice
    probe = MixtureDataset("s3://mix-ray/demo", decode_images=False, columns=["id"])
    budget = 3 * max(b - a for ranges in probe._index.remote.ranges for a, b in ranges)
    for world in (1, 2):
        for rank in range(world):
            kw = {"seed": 3, "rank": rank, "world_size": world, "decode_images": False, "columns": ["id"],
                  "shuffle_window": 16}
            want = [r["id"] for r in MixtureDataset(local_out, **kw)]
            ds = MixtureDataset("s3://mix-ray/demo", cache_bytes=budget, **kw)
            assert [r["id"] for r in ds] == want
            cache = ds._index.remote.cache
            assert cache.fetches > 0 and sum(f.stat().st_size for f in cache.folder.glob("*.bin")) <= budget
    # DataLoader workers: each takes its blocks, the loader returns the rank's stream in order
    from torch.utils.data import DataLoader

    kw = {"seed": 5, "decode_images": False, "columns": ["id"], "shuffle_window": 16, "batch_size": 4}
    want = [r["id"] for r in MixtureDataset(local_out, **kw)]
    loader = DataLoader(MixtureDataset("s3://mix-ray/demo", cache_bytes=budget, **kw), batch_size=4, num_workers=2)
    assert [i for batch in loader for i in batch["id"]] == want
    # resume: skipping half the rank fetches nothing before the resume point
    ds = MixtureDataset("s3://mix-ray/demo", seed=3, columns=["id"], decode_images=False, shuffle_window=16,
                        cache_bytes=budget)
    ids = [r["id"] for r in ds]
    ds.skip(len(ds) - 1)
    rows_before, fetched_before = ds.io.rows, ds._index.remote.cache.fetches
    assert [r["id"] for r in ds] == ids[-1:]
    assert ds.io.rows - rows_before < manifest["total_rows"]  # one window read, not the epoch
    assert ds._index.remote.cache.fetches - fetched_before <= 1

    # a slice that fits in the cache is read from local disk on its next pass
    warm = MixtureDataset("s3://mix-ray/demo", seed=3, columns=["id"], decode_images=False, cache_bytes=1 << 30)
    first = [r["id"] for r in warm]
    fetched = warm._index.remote.cache.fetches
    assert [r["id"] for r in warm] == first and warm._index.remote.cache.fetches == fetched

    # load-time weights over a bucket and a local folder
    kw = {"seed": 2, "decode_images": False, "columns": ["id"], "shuffle_window": 16, "num_samples": 200}
    want = [r["id"] for r in MixtureDataset.from_sources({str(local_out): 1.0, f"{local_out}/.": 2.0}, **kw)]
    assert [r["id"] for r in MixtureDataset.from_sources({"s3://mix-ray/demo": 1.0, f"{local_out}/.": 2.0}, **kw)] \
        == want

    hf = load("s3://mix-ray/demo")
    assert hf.num_rows == manifest["total_rows"]
    assert sorted(hf["id"]) == sorted(load(str(local_out))["id"])


def test_killed_driver_then_rerun_on_s3_reuses_every_finished_unit(s3, local_demo, tmp_path):
    import s3fs

    _, manifest, digests = local_demo
    s3.make_bucket("mix-kill")
    cmd = [sys.executable, "-m", "medmix.cli", "build", "--recipe", "demo", "--out", "s3://mix-kill/demo",
           "--cache", "s3://mix-kill/cache"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDMIX_SCRATCH": str(tmp_path / "scratch-a")}
    fs = s3fs.S3FileSystem()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            fs.invalidate_cache()
            if fs.glob("mix-kill/cache/normalized/*/*.json"):
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    fs.invalidate_cache()
    fs.pipe_file("mix-kill/demo/.medmix-tmp/dead/data/train-00000-of-00002.parquet", b"half a shard")
    finished = {f: fs.info(f)["LastModified"] for f in fs.glob("mix-kill/cache/normalized/*/*.json")}
    assert finished and not fs.exists("mix-kill/demo/manifest.json")  # the commit point was never reached
    # the rerun comes from "another machine": a fresh scratch folder, only the bucket in common
    env["MEDMIX_SCRATCH"] = str(tmp_path / "scratch-b")
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
    fs.invalidate_cache()
    assert {f: fs.info(f)["LastModified"] for f in finished} == finished, "a finished unit was redone"
    remote = _s3_digests("mix-kill/demo")
    assert remote == digests  # and the killed run's temporary key is gone
    assert _stable(json.loads(fs.cat_file("mix-kill/demo/manifest.json"))) == _stable(manifest)


def test_remote_out_holding_another_recipe_is_refused(s3, tmp_path):
    import s3fs

    s3.make_bucket("mix-other")
    s3fs.S3FileSystem().pipe_file("mix-other/demo/.medmix-build.json", json.dumps(
        {"recipe_sha256": "0" * 64, "schema_version": 1, "medmix_version": "0"}).encode())
    with pytest.raises(MedmixError, match="holds a build of another recipe"):
        _build("s3://mix-other/demo", tmp_path / "cache")


def test_storage_503_is_retried_then_a_clear_error(s3, local_demo, tmp_path, monkeypatch):
    from s3server import FaultProxy

    _, manifest, digests = local_demo
    s3.make_bucket("mix-503")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries off: medmix's backoff is under test
    flaky = FaultProxy(s3.endpoint, fail_first=4)
    try:  # endpoint given the way a user gives it on the command line: --storage-option endpoint_url=...
        got = _build("s3://mix-503/demo", tmp_path / "cache", storage_options={"endpoint_url": flaky.endpoint})
    finally:
        flaky.stop()
    assert flaky.failed == 4 and flaky.requests > 4
    assert _stable(got) == _stable(manifest)

    monkeypatch.setenv("MEDMIX_STORAGE_RETRIES", "3")
    down = FaultProxy(s3.endpoint, fail_first=-1)
    try:
        started = time.time()
        with pytest.raises(MedmixError, match=r"s3://mix-503/other.*kept failing after 3 attempts.*rerun"):
            _build("s3://mix-503/other", tmp_path / "cache", storage_options={"endpoint_url": down.endpoint})
        assert time.time() - started < 30
    finally:
        down.stop()


def test_missing_ray_names_the_extra(monkeypatch):
    from medmix.executors import make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when not installed
    with pytest.raises(MedmixError, match=r'pip install "medmix\[ray\]"'):
        make_executor("ray")
