"""SlotCache: growth keeps contents, `keep` closes gaps with the fewest row moves."""

from __future__ import annotations

import numpy as np
import pytest

from server.kv_cache import SlotCache

H, D = 2, 3


def filled(rows: list[list[int]], max_rows: int = 8) -> SlotCache:
    """key[r, h, t, d] = token id of row r at t; value = -key."""
    cache = SlotCache(num_layers=2, heads=H, head_dim=D, max_rows=max_rows, max_length=512)
    cache.reserve(len(rows), max(len(r) for r in rows))
    for r, ids in enumerate(rows):
        for key, value in cache.layers:
            key[r, :, : len(ids)] = np.array(ids)[None, :, None]
            value[r, :, : len(ids)] = -np.array(ids)[None, :, None]
        cache.lengths[r] = len(ids)
    cache.size = len(rows)
    return cache


def rows_of(cache: SlotCache) -> list[list[int]]:
    key, value = cache.layers[1]
    out = []
    for r in range(cache.size):
        n = int(cache.lengths[r])
        assert (value[r, :, :n] == -key[r, :, :n]).all()
        out.append(key[r, 0, :n, 0].astype(int).tolist())
    return out


def test_reserve_grows_by_doubling_and_keeps_contents():
    cache = filled([[1, 2, 3], [4]])
    assert cache.layers[0][0].shape == (2, H, 64, D)
    cache.reserve(3, 100)
    assert cache.layers[0][0].shape == (4, H, 128, D)
    assert rows_of(cache) == [[1, 2, 3], [4]]
    with pytest.raises(ValueError):
        cache.reserve(9, 10)


def test_keep_moves_tail_survivors_into_holes_only():
    cache = filled([[1], [2, 2], [3, 3, 3], [4], [5, 5]])
    key_before = cache.layers[0][0].copy()
    order = cache.keep([1, 3, 4])  # rows 0 and 2 finished
    assert order == [3, 1, 4]  # rows 3 and 4 (past the new size) fill holes 0 and 2
    assert rows_of(cache) == [[4], [2, 2], [5, 5]]
    assert (cache.layers[0][0][1] == key_before[1]).all()
    assert cache.size == 3 and cache.lengths[3:].tolist() == [0] * (cache.rows - 3)


def test_block_is_a_view_into_the_buffers():
    cache = filled([[1, 2], [3, 4]])
    key, _ = cache.block(1, 2)[0]
    key[0, :, 2] = 9
    assert (cache.layers[0][0][1, :, 2] == 9).all()
    assert key.flags["C_CONTIGUOUS"]


def test_nbytes_counts_every_buffer():
    cache = filled([[1]])
    assert cache.nbytes == 2 * 2 * 1 * H * 64 * D * 4
