"""benchmarks/export_readback.py: its verdict can fail, and on the demo every format reads back."""

from __future__ import annotations

import json


def _rows(n: int) -> list[dict]:
    return [{"id": f"s/{i}", "source": "s", "license": "CC0-1.0", "image_sha256": None} for i in range(n)]


def test_a_row_missing_on_either_side_or_changed_is_counted(readback):
    compare = readback.compare
    short = compare(iter(_rows(6)), iter(_rows(5)))  # plain zip would swallow the sixth mixture row
    assert (short["rows"], short["rows_only_in_mixture"], short["rows_only_in_reader"]) == (5, 1, 0)
    extra = compare(iter(_rows(5)), iter(_rows(6)))
    assert (extra["rows_only_in_mixture"], extra["rows_only_in_reader"]) == (0, 1)
    changed = _rows(6)
    changed[2]["license"] = "CC-BY-4.0"
    diff = compare(iter(_rows(6)), iter(changed), limit=1)
    assert diff["mismatches"] == 1 and diff["first_mismatches"][0]["row"] == 2


def test_the_demo_reads_back_exactly_in_webdataset_and_llava(readback, demo, tmp_path, capsys):
    try:
        readback.main([str(demo), "--work", str(tmp_path / "work"), "--format", "webdataset,llava"])
    except SystemExit as exc:
        assert exc.code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] and summary["formats"]["webdataset"]["rows"] == summary["formats"]["llava"]["rows"] > 0
    assert summary["formats"]["llava"]["image_rows"] > 0
