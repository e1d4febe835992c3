"""A stand-in for libcudart on host memory, so CudaMemory's own code (pointer arithmetic,
strided copies by address, syncs) runs on a machine without a GPU."""

from __future__ import annotations

import ctypes

import onnxruntime as ort

from server.memory import CUDA_MEMCPY_DEVICE_TO_DEVICE

ALLOCATE = ort.OrtValue.ortvalue_from_shape_and_type  # buffers as the CUDA path allocates them


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
