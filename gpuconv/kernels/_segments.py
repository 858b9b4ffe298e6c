"""Runs of equal keys, found by sorting on the device: the layout that the GPU impls'
deterministic reductions walk instead of scattering with atomics (embedding gradients,
k-means centres). Written once for any array module (NumPy under numba's simulator, CuPy).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .. import backend

__all__ = ["positions_by_key", "segment_tiles", "TiledSegments", "tiled_segments",
           "TILE_POSITIONS"]

# Sort keys are key * positions + position in int64.
SORT_KEY_LIMIT = 2 ** 63
# Positions per tile: enough tiles to fill a GPU from about 10^5 positions on, and short
# serial sums per thread.
TILE_POSITIONS = 256


def positions_by_key(keys, num_keys: int, op: str):
    """``(order, start)``: the positions of ``keys`` (ints in ``[0, num_keys)``, any shape,
    read flat) sorted by (key, position), and where each key's run starts in that order
    (``start[num_keys]`` is the position count), both int64.

    Sorting the unique values ``key * positions + position`` orders by key and, within a
    key, by position, whatever the sort's stability.
    """
    xp = backend.array_module(keys)
    positions = keys.size
    stride = max(positions, 1)
    if num_keys * stride >= SORT_KEY_LIMIT:
        raise ValueError(f"{op}: {num_keys} keys times {positions} positions overflow the "
                         "int64 sort key")
    sorted_keys = xp.sort(keys.reshape(-1) * stride + xp.arange(positions, dtype=xp.int64))
    sorted_rows = sorted_keys // stride
    order = sorted_keys - sorted_rows * stride
    start = xp.searchsorted(sorted_rows, xp.arange(num_keys + 1, dtype=xp.int64))
    return order, start.astype(xp.int64, copy=False)


def segment_tiles(start, tile: int):
    """``(tile_start, tile_segment, tiles)``: each run ``start[j] .. start[j+1]`` cut into
    ``ceil(length / tile)`` tiles; ``tile_start[j] .. tile_start[j+1]`` are run j's tiles,
    ``tile_segment[t]`` is tile t's run, ``tiles`` their number (int64 arrays, an int)."""
    xp = backend.array_module(start)
    per_run = (start[1:] - start[:-1] + (tile - 1)) // tile
    tile_start = xp.zeros(start.shape, xp.int64)
    xp.cumsum(per_run, out=tile_start[1:])
    tiles = int(tile_start[-1])
    tile_segment = xp.searchsorted(tile_start, xp.arange(tiles, dtype=xp.int64), side="right") - 1
    return tile_start, tile_segment.astype(xp.int64, copy=False), tiles


class TiledSegments(NamedTuple):
    """The positions grouped by key and each key's run cut into tiles (int64 arrays)."""

    order: Any          # positions sorted by (key, position)
    start: Any          # (num_keys + 1,) where each key's run starts in ``order``
    tile_start: Any     # (num_keys + 1,) where each key's tiles start
    tile_segment: Any   # (tiles,) the key of each tile
    tiles: int


def tiled_segments(keys, num_keys: int, op: str, tile: int = TILE_POSITIONS) -> TiledSegments:
    """:func:`positions_by_key`, then :func:`segment_tiles` of its runs."""
    order, start = positions_by_key(keys, num_keys, op)
    return TiledSegments(order, start, *segment_tiles(start, tile))
