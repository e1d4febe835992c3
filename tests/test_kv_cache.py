"""SlotCache: growth keeps contents, `keep` closes gaps with the fewest row moves.

Every test runs on host memory (numpy, the CPU provider) and on CudaMemory's own code with
host allocations and a libcudart stand-in that copies host memory: the pointer arithmetic
the GPU path uses is checked here, on a machine without a GPU."""

from __future__ import annotations

import ctypes

import numpy as np
import onnxruntime as ort
import pytest

from server.kv_cache import SlotCache
from server.memory import CUDA_MEMCPY_DEVICE_TO_DEVICE, CudaMemory, HostMemory, memory_for

H, D = 2, 3
ALLOCATE = ort.OrtValue.ortvalue_from_shape_and_type


class FakeCudart:
    """libcudart's cudaMemset / cudaMemcpy2D / cudaDeviceSynchronize, on host memory."""

    def __init__(self) -> None:
        self.copies = 0

        self.syncs = 0

        def memset(*args) -> int:
            ptr, value, count = declared(memset, args)
            ctypes.memset(ptr, value, count)
            return 0

        def memcpy2d(*args) -> int:
            dst, dpitch, src, spitch, width, height, kind = declared(memcpy2d, args)
            assert kind == CUDA_MEMCPY_DEVICE_TO_DEVICE and width <= min(dpitch, spitch)
            for i in range(height):
                ctypes.memmove(dst + i * dpitch, src + i * spitch, width)
            self.copies += 1
            return 0

        def synchronize(*args) -> int:
            declared(synchronize, args)
            self.syncs += 1
            return 0

        self.cudaMemset = memset
        self.cudaMemcpy2D = memcpy2d
        self.cudaDeviceSynchronize = synchronize


def declared(function, args: tuple) -> tuple:
    """What ctypes would pass to the C function: each argument through its declared type
    (CudaMemory declares `argtypes`; a missing or wrong declaration fails here)."""
    argtypes = function.argtypes
    assert len(argtypes) == len(args), f"{len(args)} arguments, {len(argtypes)} declared"
    return tuple(kind(arg).value for kind, arg in zip(argtypes, args, strict=True))


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
        cache.lengths[r] = len(ids)
    for k, v in cache.layers:
        write(memory, k, key)
        write(memory, v, -key)
    cache.size = len(rows)
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
    assert cache.size == 3 and cache.lengths[3:].tolist() == [0] * (cache.rows - 3)


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
