"""Where this process sits in a torch.distributed job: the one answer loader and trainer share.

Why one helper: "is torch.distributed running" was asked in four places with small differences;
the loader and the trainer must agree on rank and world size or ranks read overlapping slices.
torch is imported lazily so `medmix build` never pays for it.
"""

from __future__ import annotations

import os


def is_distributed() -> bool:
    """True inside an initialized torch.distributed process group."""
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    return dist.is_available() and dist.is_initialized()


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Explicit arguments, else an initialized process group, else RANK/WORLD_SIZE, else 0/1."""
    if rank is None or world_size is None:
        if is_distributed():
            import torch.distributed as dist

            auto = dist.get_rank(), dist.get_world_size()
        else:
            try:
                auto = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
            except ValueError:
                raise ValueError(f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} "
                                 "are not integers") from None
        rank = auto[0] if rank is None else rank
        world_size = auto[1] if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} is not valid for world_size={world_size}")
    return rank, world_size
