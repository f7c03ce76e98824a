"""Memory is bounded by the shuffle window, not by the mixture: a reader holds the window being
handed out and the next one, whatever the number of rows behind them."""

from __future__ import annotations

import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medmix.core.schema import empty_row, to_table
from medmix.loader import MixtureDataset, WeightedMixture

IMAGE = 4_000  # bytes per image: large next to the rest of a row, as real images are
WINDOW = 512  # rows per shuffle window (not below partition.CHUNK, the rows planned at a time)


def _mixture(root, rows: int):
    (root / "data").mkdir(parents=True)
    batch = []
    for i in range(rows):
        row = empty_row()
        row.update(id=f"m/{i}", source="m", split="train", question=f"q{i}", answer="a", license="CC0-1.0",
                   image={"bytes": bytes([i % 251]) * IMAGE, "path": None})
        batch.append(row)
    pq.write_table(to_table(batch), root / "data" / "train-00000-of-00001.parquet", row_group_size=128)
    return root


def _peaks(ds) -> tuple[int, int]:
    """Peak Python allocations and peak Arrow pool bytes while iterating `ds` (rows dropped as they come)."""
    tracemalloc.start()
    try:
        arrow_peak = 0
        for k, _ in enumerate(ds):
            if k % 64 == 0:
                arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
        return tracemalloc.get_traced_memory()[1], arrow_peak
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("weighted", [False, True])
def test_a_reader_holds_about_two_windows_whatever_the_mixture_size(tmp_path, weighted):
    peaks = {}
    for rows in (1536, 6144):  # 3 and 12 windows
        root = _mixture(tmp_path / str(rows), rows)
        kw = {"shuffle_window": WINDOW, "decode_images": False, "seed": 1}
        ds = WeightedMixture({root: 1}, exhausted="stop", **kw) if weighted else MixtureDataset(root, **kw)
        peaks[rows] = _peaks(ds)
    window = WINDOW * IMAGE
    for rows, (python, arrow) in peaks.items():
        assert python < 3 * window, (rows, python)  # the window's images in Python, plus a chunk
        assert arrow < 4 * window, (rows, arrow)  # the window, the next one, a take's temporaries
    # four times the rows: the same peaks, within what one window of slack allows
    assert peaks[6144][0] < peaks[1536][0] + window and peaks[6144][1] < peaks[1536][1] + window
