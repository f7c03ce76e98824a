"""False flags of medmix's identifier detectors on real medical text (issue 27).

Why: the detectors run on the question, answer and context columns of local sources, and a
caption or report flagged for a "name" it does not hold is quarantined or redacted for nothing.
The canary benchmark measures false flags on figure text only; this runs `scan_text` (the
typed-text path) over real published medical text, which holds no patient identifiers, so every
`name` it flags is a false flag (author names and eponyms, where they appear, are the hard cases):

* PubMedQA's expert-labelled set, `ori_pqal.json` (1,000 abstracts: question, contexts, long
  answer), from github.com/pubmedqa/pubmedqa `data/ori_pqal.json`;
* MedQuAD answers, from the XML files of github.com/abachaa/MedQuAD (give a folder; `--medquad-files`
  caps how many are read, in sorted path order).

Reported: texts flagged per kind, and the flagged `name` spans of up to `--show` texts (these
are published texts, so showing them is harmless). Dates, ids and ages in abstracts are often
real study dates and counts; only `name` is a pure false-flag count here.

    python benchmarks/phi_text_flags.py --pubmedqa ori_pqal.json --medquad MedQuAD/ --medquad-files 1500
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medmix.phi import identifiers  # noqa: E402


def texts(pubmedqa: Path | None, medquad: Path | None, medquad_files: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if pubmedqa is not None:
        for item in json.loads(pubmedqa.read_text(encoding="utf-8")).values():
            out += [("pubmedqa", c) for c in item["CONTEXTS"]]
            out += [("pubmedqa", item["LONG_ANSWER"]), ("pubmedqa", item["QUESTION"])]
    if medquad is not None:
        for path in sorted(medquad.rglob("*.xml"))[:medquad_files]:
            xml = path.read_text(encoding="utf-8", errors="replace")
            out += [("medquad", re.sub(r"\s+", " ", a)) for a in re.findall(r"<Answer>(.*?)</Answer>", xml, re.S)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pubmedqa", type=Path, help="ori_pqal.json")
    ap.add_argument("--medquad", type=Path, help="a MedQuAD checkout (its XML files)")
    ap.add_argument("--medquad-files", type=int, default=1500)
    ap.add_argument("--show", type=int, default=30)
    args = ap.parse_args(argv)
    items = texts(args.pubmedqa, args.medquad, args.medquad_files)
    if not items:
        ap.error("give --pubmedqa and/or --medquad")
    t = time.perf_counter()
    found = [identifiers.scan_text(text) for _, text in items]
    seconds = time.perf_counter() - t
    report = {
        "date": time.strftime("%Y-%m-%d"), "lexicon": identifiers.lexicon_source(), "texts": len(items),
        "chars": sum(len(x) for _, x in items), "seconds": round(seconds, 1),
        "flagged": {k: sum(k in kinds for kinds, _ in found) for k in identifiers.KINDS},
        "name_false_flag_rate": round(sum("name" in kinds for kinds, _ in found) / len(items), 5),
    }
    print(json.dumps(report, indent=1))
    shown = 0
    for (where, text), (kinds, spans) in zip(items, found):
        if "name" in kinds and shown < args.show:
            print(f"  name in {where}: {[text[a:b] for a, b in spans][:6]}")
            shown += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
