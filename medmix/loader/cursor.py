"""The cursor: where a pass over one epoch stands, and the one way to reset it.

Positions are counted on the rank's stream (see `partition`): `consumed` samples of this rank
were done when the pass started, and for weighted mixtures `positions[s]` of them came from source
s. Inside a DataLoader worker, `layout` records that worker's share (its id, the worker count, the
block size, and the `consumed` its blocks are counted from) and `done` how many samples of that
share it has yielded, because only that worker knows its progress.

The hot loop only counts `done`; the rank-level position after the last yielded sample is
derived from the chunk being yielded when a state is asked for (`progress`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from medmix.core.errors import MedmixError

__all__ = ["Cursor"]


class Cursor:
    def __init__(self, zero_positions: list[int] | None) -> None:
        self._zero = zero_positions
        self.reset()

    def reset(self, consumed: int = 0, positions: list[int] | None = None, *, layout: dict[str, Any] | None = None,
              done: int = 0, pending: bool = False) -> None:
        """Set the position. `pending`: the next pass starts here (a resume or skip); otherwise
        the next pass starts the epoch from its beginning."""
        self.consumed = consumed
        self.positions = list(self._zero) if positions is None and self._zero is not None else positions
        self.layout = layout
        self.done = done
        self.pending = pending
        # the chunk being yielded: its rank-stream indices (and source positions after each), and
        # `done` before it
        self.chunk: tuple[np.ndarray, np.ndarray | None] | None = None
        self.chunk_done = 0

    @property
    def done(self) -> int:
        """Own samples yielded so far in this pass (see `hand_out`)."""
        if self._rows is not None:  # a chunk handed out by its iterator: count what it gave
            rows, total = self._rows
            return self._done + total - rows.__length_hint__()
        return self._done

    @done.setter
    def done(self, value: int) -> None:
        self._rows = None
        self._done = value

    def hand_out(self, rows: list[Any]) -> Iterator[Any]:
        """An iterator over `rows` that `done` follows, for `yield from`: the per-row loop then
        runs in C, with no count kept per row (a list iterator has moved past an item when it is
        yielded, so a state taken after receiving it covers it)."""
        self.done = self.done
        it = iter(rows)
        self._rows = (it, len(rows))
        return it

    def begin(self, worker: int, workers: int, block: int) -> tuple[int, int]:
        """Start a pass: (rank position this worker's blocks count from, own samples already done).

        A rank-level position can be split over any number of workers; a worker-level one (saved
        inside a StatefulDataLoader worker) only by the same worker of the same layout.
        """
        if not self.pending:
            self.reset()
        self.pending, self.chunk = False, None
        lay = self.layout
        if lay is None:
            if workers > 1:
                self.layout = {"id": worker, "num_workers": workers, "batch_size": block, "start": self.consumed}
            return self.consumed, 0
        if (lay["id"], lay["num_workers"], lay["batch_size"]) != (worker, workers, block):
            raise MedmixError(f"this state was saved by DataLoader worker {lay['id']} of {lay['num_workers']} "
                              f"with batch_size={lay['batch_size']}; resume with the same num_workers and "
                              f"batch_size (now worker {worker} of {workers}, batch_size={block})")
        return int(lay["start"]), self.done

    def at_chunk(self, own: np.ndarray, after: np.ndarray | None = None) -> None:
        """The samples about to be yielded (and, weighted, each source's count after each)."""
        self.chunk, self.chunk_done = (own, after), self.done

    def progress(self) -> tuple[int, list[int] | None]:
        """(samples of this rank consumed, per-source positions) after the last yielded sample."""
        if self.chunk is not None and self.done > self.chunk_done:
            own, after = self.chunk
            n = self.done - self.chunk_done - 1
            return int(own[n]) + 1, None if after is None else after[n].tolist()
        return self.consumed, self.positions

    def state(self) -> dict[str, Any]:
        """The position part of a `state_dict` (keys `consumed`, `positions`, `worker`)."""
        worker = None if self.layout is None or self.done == 0 else {**self.layout, "done": self.done}
        consumed, positions = self.progress()
        return {"consumed": consumed, "positions": positions, "worker": worker}

    def restore(self, state: dict[str, Any]) -> None:
        """Inverse of `state`; the next pass resumes right after it."""
        positions = state.get("positions")
        worker = state.get("worker")
        self.reset(int(state["consumed"]), None if positions is None else [int(p) for p in positions],
                   layout=None if worker is None else {k: v for k, v in worker.items() if k != "done"},
                   done=0 if worker is None else int(worker["done"]), pending=True)
