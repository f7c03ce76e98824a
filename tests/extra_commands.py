"""The commands that need an extra, with arguments that reach the extra's first import: one list
for the in-process check (tests/package/test_extras.py) and the core-install venv
(tests/package/test_core_install.py, which checks the first five, as it did before this list)."""

EXTRA_COMMANDS = [
    ("train", ["train", "--config", "tiny", "--data", "mix", "--out", "run"]),
    ("eval vqa", ["eval", "vqa", "ckpt", "-d", "vqa_rad"]),
    ("eval classify", ["eval", "classify", "-e", "scratch"]),
    ("view", ["view", "mix"]),
    ("build --executor ray", ["build", "--executor", "ray", "--plan"]),
    ("stats --tokenizer", ["stats", "mix", "--tokenizer", "gpt2"]),
]
