"""`medmix demo` latency (issue 25): load time, time to first token, tokens/s, and what the page adds.

In one run, on one checkpoint (by default the tiny preset trained 2 steps on the demo mixture, as
the tests do; or `--run RUN`), for each `--dtype`:

1. load: `cold_start_s`, a fresh process importing medmix.demo (torch, transformers) and loading the
   checkpoint; then `load_answerer` (pick the checkpoint, build the model, load its weights) in this
   process, first and best of `--loads`.
2. time to first token (from the request, image decode and normalization included) and decode
   tokens/s after the first, from `Answerer.stream` over the held-out VQA-RAD questions of the
   demo mixture, `--max-new-tokens` each (the tiny model rarely stops early, so every answer has
   the full count).
3. the peer: `VLM.generate` on the same image and question without a streamer, which is what
   `medmix eval vqa` runs. Ratio = streamed wall time / plain wall time per answer: what streaming
   costs. Target ≤ 1.25 on CPU (the streamer decodes the growing text once per token).
4. the page: the same questions through `gradio_client` to a running page (upload, queue, SSE):
   ratio = page wall time / plain wall time, with the page's default update interval
   (`STREAM_INTERVAL`) and with an update per token. Reported, no target (it includes an HTTP
   upload and the client's own work).

    nice -n 10 python benchmarks/demo_latency.py --dtype float32 --dtype bfloat16

Prints a JSON summary (and the machine's load average: on a shared machine compare ratios, not
absolute times).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tiny_run(tmp: Path) -> tuple[Path, Path, Path]:
    from medmix.pipeline import BuildOptions, build
    from medmix.recipe import load_recipe
    from trainer.cli import train_command

    build(load_recipe("demo"), BuildOptions(out=tmp / "mixture", cache=tmp / "cache"), log=lambda m: None)
    train_command(config="tiny", data=tmp / "mixture", out=tmp / "run", steps=2,
                  overrides=["train.progress=false", "train.save_every=2"], resume=False)
    return tmp / "run", tmp / "mixture", tmp / "cache"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_load(run: Path, device: str, dtype: str) -> float:
    """Seconds a fresh process needs to import medmix.demo (torch, transformers) and load the checkpoint."""
    code = ("import time; t = time.perf_counter(); from medmix.demo.answering import load_answerer; "
            f"load_answerer({str(run)!r}, device={device!r}, dtype={dtype!r}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(run: Path, examples: list, dtype: str, device: str, max_new: int, loads: int, tmp: Path) -> dict:
    from gradio_client import Client, handle_file

    from medmix.demo.answering import load_answerer, load_image
    from medmix.demo.gradio_page import STREAM_INTERVAL, create_demo, launch

    cold = cold_load(run, device, dtype)
    load_times = []
    for _ in range(loads):
        answerer = load_answerer(run, device=device, dtype=dtype)
        load_times.append(answerer.load_seconds)
    ttft, rates, streamed, plain, page, tokens = [], [], [], [], [], []
    for ex in examples:
        row = ex.row()
        image = load_image(ex.image, "x" + ex.suffix)
        answerer.answer(image, row, max_new)  # warm-up of this shape
        t0 = time.perf_counter()
        updates = list(answerer.stream(load_image(ex.image, "x" + ex.suffix), row, max_new, started=t0))
        update = updates[-1]
        streamed.append(time.perf_counter() - t0)
        ttft.append(update.ttft)
        tokens.append(update.tokens)
        if update.tokens_per_s:
            rates.append(update.tokens_per_s)
        t0 = time.perf_counter()
        answer = answerer.answer(load_image(ex.image, "x" + ex.suffix), row, max_new)
        plain.append(time.perf_counter() - t0)
        assert answer == update.text, "the streamed answer must be generate's"
    page_every_token = []
    for interval, times in ((STREAM_INTERVAL, page), (0.0, page_every_token)):
        demo = create_demo(answerer, [], max_new_tokens=max_new, files_dir=tmp / f"files-{dtype}-{interval}",
                           stream_interval=interval)
        _, url, _ = launch(demo, port=free_port(), block=False)
        try:
            client = Client(url, verbose=False)
            for i, ex in enumerate(examples):
                path = tmp / f"q{i}{ex.suffix}"
                path.write_bytes(ex.image)
                client.predict(handle_file(str(path)), ex.task, ex.question, "", max_new, api_name="/ask")  # warm
                t0 = time.perf_counter()
                client.predict(handle_file(str(path)), ex.task, ex.question, "", max_new, api_name="/ask")
                times.append(time.perf_counter() - t0)
        finally:
            demo.close()
    med = statistics.median
    return {"dtype": dtype, "device": device, "questions": len(examples), "max_new_tokens": max_new,
            "tokens_per_answer": med(tokens),
            "cold_start_s": round(cold, 2), "load_s_first": round(load_times[0], 3),
            "load_s_best": round(min(load_times), 3),
            "ttft_s_median": round(med(ttft), 4), "decode_tokens_per_s_median": round(med(rates), 1),
            "streamed_s_median": round(med(streamed), 4), "plain_generate_s_median": round(med(plain), 4),
            "page_s_median": round(med(page), 4), "page_every_token_s_median": round(med(page_every_token), 4),
            "stream_vs_generate": round(med(streamed) / med(plain), 3),
            "page_vs_generate": round(med(page) / med(plain), 3),
            "params": sum(p.numel() for p in answerer.vlm.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a run or checkpoint (default: train the tiny preset 2 steps)")
    ap.add_argument("--mixture", type=Path, help="its mixture (held-out questions); with --run")
    ap.add_argument("--dtype", action="append", help="float32 (default), bfloat16, float16; repeatable")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the tiny model gains nothing from more)")
    args = ap.parse_args()

    import torch

    from medmix.demo.gallery import held_out

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="medmix-demo-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.run:
            run, mixture, cache = args.run, args.mixture, Path(".medmix-cache")
        else:
            run, mixture, cache = tiny_run(tmp)
        examples = held_out(mixture, cache=cache, log=lambda m: print(m, file=sys.stderr))
        results = [measure(run, examples, dtype, args.device, args.max_new_tokens, args.loads, tmp)
                   for dtype in (args.dtype or ["float32"])]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "load_average": [round(x, 2) for x in os.getloadavg()],
                      "threads": args.threads, "peak_rss_mib": round(peak, 1), "results": results}, indent=2))


if __name__ == "__main__":
    main()
