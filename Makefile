# The few dev commands. `make test` runs README.md's command (2) through .ci/run, the one command CI
# runs, so the README, CI and this file cannot disagree about what "the tests" are.
.PHONY: help test lint docs datasets bench bench-smoke

PYTHON ?= python
BENCH_OUT ?= /tmp/medmix-bench

help:
	@echo "make test         README command (2): install dev extras + Chromium/Tesseract, ruff, mkdocs --strict, pytest"
	@echo "make lint         ruff check ."
	@echo "make docs         mkdocs build --strict into site/"
	@echo "make datasets     regenerate DATASETS.md from the registry and docs/datasets/"
	@echo "make bench        list the benchmarks"
	@echo "make bench-smoke  run every CPU benchmark at a small size (checks they run; not a measurement)"

test:
	bash .ci/run

lint:
	ruff check .

docs:
	mkdocs build --strict

datasets:
	$(PYTHON) -m medmix.publish.datasets_md > DATASETS.md

bench:
	@for f in benchmarks/*.py; do \
	  printf '%-32s %s\n' "$$f" "$$($(PYTHON) -c 'import ast,sys; d=ast.get_docstring(ast.parse(open(sys.argv[1]).read())) or ""; print(d.splitlines()[0] if d else "")' $$f)"; \
	done
	@echo "dated figures and full commands: docs/benchmarks.md"

bench-smoke:
	mkdir -p $(BENCH_OUT)
	$(PYTHON) benchmarks/build_throughput.py --images 40 --side 96 --formats jpeg
	$(PYTHON) benchmarks/loader_throughput.py --rows 3000 --hf-limit 500 --repeat 1 --decode-repeat 1
	$(PYTHON) benchmarks/stats_memory.py --rows 5000 --shard-rows 1000
	$(PYTHON) benchmarks/view_latency.py --rows 3000
	$(PYTHON) benchmarks/dedup_scale.py --scale 0.001
	$(PYTHON) benchmarks/build_scaling.py --images 64 --side 64
	$(PYTHON) benchmarks/train_throughput.py --config tiny --steps 2 --warmup 1
	$(PYTHON) benchmarks/h200_ladder.py --dry-run --out $(BENCH_OUT)/ladder
