"""SlotCache: growth keeps contents, `keep` closes gaps with the fewest row moves.

Every test runs on host memory (numpy, the CPU provider) and on CudaMemory's own code with
host allocations and a libcudart stand-in that copies host memory: the pointer arithmetic
the GPU path uses is checked here, on a machine without a GPU."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from server.kv_cache import CacheLost, SlotCache
from server.memory import CudaMemory, HostMemory, memory_for
from tests.support.cudart import ALLOCATE, FakeCudart

H, D = 2, 3


MEMORIES = {
    "host": HostMemory,
    "cuda-code-on-host": lambda: CudaMemory(ALLOCATE, cudart=FakeCudart(), device="cpu"),
}


@pytest.fixture(params=list(MEMORIES))
def memory(request):
    return MEMORIES[request.param]()


def write(memory, buffer, array: np.ndarray) -> None:
    if isinstance(memory, HostMemory):
        buffer[...] = array
    else:
        buffer.value.update_inplace(np.ascontiguousarray(array))


def filled(memory, rows: list[list[int]], max_rows: int = 8) -> SlotCache:
    """key[r, h, t, d] = token id of row r at t; value = -key."""
    cache = SlotCache(2, H, D, max_rows=max_rows, max_length=512, memory=memory)
    cache.reserve(len(rows), max(len(r) for r in rows))
    key = np.zeros(cache.layers[0][0].shape, dtype=np.float32)
    for r, ids in enumerate(rows):
        key[r, :, : len(ids)] = np.array(ids)[None, :, None]
    for k, v in cache.layers:
        write(memory, k, key)
        write(memory, v, -key)
    cache.append([len(ids) for ids in rows])  # as the runner does once the graph wrote them
    return cache


def rows_of(cache: SlotCache) -> list[list[int]]:
    key, value = (cache.memory.to_numpy(b) for b in cache.layers[1])
    out = []
    for r in range(cache.size):
        n = int(cache.lengths[r])
        assert (value[r, :, :n] == -key[r, :, :n]).all()
        out.append(key[r, 0, :n, 0].astype(int).tolist())
    return out


def test_reserve_grows_by_doubling_and_keeps_contents(memory):
    cache = filled(memory, [[1, 2, 3], [4]])
    assert cache.layers[0][0].shape == (2, H, 64, D)
    cache.reserve(3, 100)
    assert cache.layers[0][0].shape == (4, H, 128, D)
    assert rows_of(cache) == [[1, 2, 3], [4]]
    with pytest.raises(ValueError):
        cache.reserve(9, 10)


def test_keep_moves_tail_survivors_into_holes_only(memory):
    cache = filled(memory, [[1], [2, 2], [3, 3, 3], [4], [5, 5]])
    key_before = memory.to_numpy(cache.layers[0][0]).copy()
    order = cache.keep([1, 3, 4])  # rows 0 and 2 finished
    assert order == [3, 1, 4]  # rows 3 and 4 (past the new size) fill holes 0 and 2
    assert rows_of(cache) == [[4], [2, 2], [5, 5]]
    assert (memory.to_numpy(cache.layers[0][0])[1] == key_before[1]).all()
    assert cache.size == 3 and cache.lengths.tolist() == [1, 2, 2]  # nothing of rows 0 and 2


def test_append_adds_rows_after_the_active_ones_and_advance_grows_the_first_rows(memory):
    cache = filled(memory, [[1, 2], [3]])
    cache.reserve(3, 4)
    cache.append([4])
    assert cache.size == 3 and cache.lengths.tolist() == [2, 1, 4]
    cache.advance(2)  # a decode step over rows 0 and 1
    assert cache.lengths.tolist() == [3, 2, 4]
    with pytest.raises(ValueError):
        cache.append([1, 1] * cache.rows)  # more rows than reserved
    with pytest.raises(ValueError):
        cache.advance(4)  # more rows than active


def test_lengths_cannot_be_written_from_outside(memory):
    cache = filled(memory, [[1, 2]])
    with pytest.raises(ValueError):
        cache.lengths[0] = 5
    assert cache.lengths.tolist() == [2]


def test_addresses_point_at_each_row_block(memory):
    cache = filled(memory, [[1, 2], [3, 4]])
    row_bytes = H * cache.capacity * D * 4
    key, value = cache.layers[0]
    assert cache.addresses(1, 2)[0] == (
        memory.address(key) + row_bytes,
        memory.address(value) + row_bytes,
    )
    assert cache.block_shape(1, 2) == (1, H, cache.capacity, D)


def test_nbytes_counts_every_buffer(memory):
    cache = filled(memory, [[1]])
    assert cache.nbytes == 2 * 2 * 1 * H * 64 * D * 4


def test_cpu_provider_gets_host_memory():
    assert isinstance(memory_for("CPUExecutionProvider", ALLOCATE), HostMemory)


def test_cuda_without_libcudart_falls_back_to_host_memory_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    def missing():
        raise OSError("libcudart not found (tried libcudart.so.12)")

    monkeypatch.setattr("server.memory.load_cudart", missing)
    with caplog.at_level("WARNING", logger="server.memory"):
        assert isinstance(memory_for("CUDAExecutionProvider", ALLOCATE), HostMemory)
    assert [r.getMessage() for r in caplog.records] == [
        "KV cache stays in host memory (libcudart not found (tried libcudart.so.12)): every "
        "step copies it to the GPU"
    ]


def test_device_copies_are_waited_for_once_per_change():
    fake = FakeCudart()
    cache = filled(CudaMemory(ALLOCATE, cudart=fake, device="cpu"), [[1], [2, 2], [3]])
    before = (fake.copies, fake.syncs)
    cache.keep([2])  # one hole filled: 2 layers x (key, value) copies, one sync
    assert (fake.copies - before[0], fake.syncs - before[1]) == (4, 1)


class CountingHostMemory(HostMemory):
    """Host memory that knows how many buffer bytes are alive, and the most there ever were;
    `fail_after` zeros() calls it raises MemoryError."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.live = self.peak = self.calls = 0
        self.fail_after = fail_after

    def zeros(self, shape, dtype):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise MemoryError("no room")
        buffer = super().zeros(shape, dtype)
        self.live += buffer.nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(buffer, self._freed, buffer.nbytes)
        return buffer

    def _freed(self, nbytes: int) -> None:
        self.live -= nbytes


def test_growth_holds_the_old_cache_plus_one_new_layer_at_most():
    memory = CountingHostMemory()
    cache = SlotCache(4, H, D, max_rows=8, max_length=512, memory=memory)
    cache.reserve(2, 64)
    old = memory.live
    memory.peak = 0
    cache.reserve(4, 128)  # rows and capacity double: each layer 4x its old size
    assert memory.live == cache.nbytes == 4 * old
    # at worst the new layers 0-3 beside the old layer 3 (all old + all new would be 5x old)
    assert memory.peak <= 4 * old + old // 4


def test_a_growth_that_fails_half_way_loses_the_cache_and_says_so():
    cache = filled(CountingHostMemory(), [[1, 2], [3]])
    cache.memory.fail_after = cache.memory.calls + 2  # layer 0's new pair, then no more
    with pytest.raises(CacheLost, match="growing the KV cache"):
        cache.reserve(2, 100)
    assert cache.size == 0 and cache.layers == []


def test_a_growth_that_fails_at_once_leaves_the_cache_as_it_was():
    cache = filled(CountingHostMemory(), [[1, 2], [3]])
    cache.memory.fail_after = cache.memory.calls
    with pytest.raises(MemoryError):
        cache.reserve(2, 100)
    assert rows_of(cache) == [[1, 2], [3]]
