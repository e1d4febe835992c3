"""KVCache filter/concatenate: exact shapes, padding trimmed, rows intact."""

from __future__ import annotations

import numpy as np

from server.kv_cache import KVCache

H, D = 2, 3


def cache_of(rows: list[list[int]]) -> KVCache:
    """Rows of token ids, left-padded; key[b, h, t, d] = token id, value = -token id."""
    length = max(len(r) for r in rows)
    ids = np.zeros((len(rows), length))
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, length - len(r) :] = r
        mask[i, length - len(r) :] = 1
    key = np.broadcast_to(ids[:, None, :, None], (len(rows), H, length, D)).astype(np.float32)
    return KVCache([(key, -key), (key * 2, -key * 2)], mask)


def rows_of(cache: KVCache) -> list[list[int]]:
    key = cache.layers[0][0]
    return [key[b, 0, cache.mask[b] == 1, 0].astype(int).tolist() for b in range(cache.batch_size)]


def test_filter_keeps_rows_and_trims_unneeded_padding():
    cache = cache_of([[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]])
    kept = cache.filter([2, 1])
    assert rows_of(kept) == [[8, 9, 10], [6, 7]]
    assert kept.mask.shape == (2, 3)  # the 5-token row left; 2 padding columns go
    for key, value in kept.layers:
        assert key.shape == value.shape == (2, H, 3, D)
    assert (kept.layers[1][0] == 2 * kept.layers[0][0]).all()
    assert (kept.layers[1][1] == -kept.layers[1][0]).all()


def test_concatenate_left_pads_the_shorter_batch():
    merged = KVCache.concatenate([cache_of([[1, 2]]), cache_of([[3, 4, 5, 6], [7]])])
    assert rows_of(merged) == [[1, 2], [3, 4, 5, 6], [7]]
    assert merged.mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]]
    assert merged.layers[0][0].shape == (3, H, 4, D)


def test_positions_count_real_tokens():
    assert cache_of([[1, 2, 3], [4]]).positions().tolist() == [[3], [1]]


def test_empty_cache_has_zero_length():
    empty = KVCache.empty(batch=2, num_layers=3, heads=H, head_dim=D, dtype=np.float32)
    assert empty.length == 0 and len(empty.layers) == 3
    assert empty.layers[0][0].shape == (2, H, 0, D)
