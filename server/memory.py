"""Where the KV cache lives: host numpy buffers (CPU provider) or device memory (CUDA).

The slot cache (server/kv_cache.py) needs three things from its memory: zeroed buffers, an
address to bind each row block at (IOBinding by pointer, so ONNX Runtime reads and writes
the cache where it is), and a strided 2-D copy for the rare row moves and growths. With the
CUDA provider the buffers are ONNX Runtime device allocations (OrtValue) and the copies are
`cudaMemcpy2D` device-to-device: a decode step moves no cache bytes between host and device.

Hand-written because ONNX Runtime's Python API can allocate device memory but cannot copy
part of it, and a CUDA array library (cupy, torch) would be a multi-GB serving dependency for
three calls; libcudart is already loaded by the CUDA provider.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)
CUDA_MEMCPY_DEVICE_TO_DEVICE = 3  # cudaMemcpyKind
Allocate = Callable[[list[int], type, str, int], Any]  # -> an OrtValue


class Memory(Protocol):
    device: str  # IOBinding's device_type: "cpu" | "cuda"
    device_id: int

    def zeros(self, shape: tuple[int, ...], dtype: type): ...

    def address(self, buffer) -> int: ...

    def copy2d(
        self,
        dst,
        dst_offset: int,
        dst_pitch: int,
        src,
        src_offset: int,
        src_pitch: int,
        width: int,
        height: int,
    ) -> None:
        """`height` runs of `width` bytes; run i starts at offset + i * pitch."""

    def finish(self) -> None:
        """Wait for the copies issued so far (before the next step reads the cache)."""

    def to_numpy(self, buffer) -> np.ndarray: ...


class HostMemory:
    """numpy buffers in host memory: what the CPU provider computes on."""

    device, device_id = "cpu", 0

    def zeros(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def address(self, buffer: np.ndarray) -> int:
        return buffer.ctypes.data

    def copy2d(
        self,
        dst: np.ndarray,
        dst_offset: int,
        dst_pitch: int,
        src: np.ndarray,
        src_offset: int,
        src_pitch: int,
        width: int,
        height: int,
    ) -> None:
        if width and height:
            _runs(dst, dst_offset, dst_pitch, width, height)[...] = _runs(
                src, src_offset, src_pitch, width, height
            )

    def finish(self) -> None:
        pass  # numpy copies are done when they return

    def to_numpy(self, buffer: np.ndarray) -> np.ndarray:
        return buffer


def _runs(buffer: np.ndarray, offset: int, pitch: int, width: int, height: int) -> np.ndarray:
    """A [height, width] byte view of a contiguous buffer."""
    flat = buffer.reshape(-1).view(np.uint8)[offset:]
    return np.lib.stride_tricks.as_strided(flat, (height, width), (pitch, 1))


@dataclass
class DeviceBuffer:
    """An ONNX Runtime allocation (kept alive here) and what the cache needs to know of it."""

    value: object | None  # onnxruntime.OrtValue; None for an empty buffer
    shape: tuple[int, ...]
    dtype: type

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    @property
    def ptr(self) -> int:
        return self.value.data_ptr() if self.value is not None else 0


class CudaMemory:
    """Device buffers allocated by ONNX Runtime, copied with libcudart.

    `allocate(shape, dtype, device, device_id)` is ONNX Runtime's
    `OrtValue.ortvalue_from_shape_and_type` (passed in: only the runner imports onnxruntime).
    Those allocations come from ONNX Runtime's CUDA allocator, which may keep freed blocks
    for reuse: while the cache doubles, old and new buffers coexist, so plan device memory
    for about 1.5x the largest cache (`kvserve_kv_cache_bytes`), not 1x.
    `device` is "cuda" in the server; tests run the same code with device "cpu" (ONNX Runtime
    host allocations) and a stand-in for libcudart that copies host memory."""

    def __init__(
        self, allocate: Allocate, device_id: int = 0, cudart=None, device: str = "cuda"
    ) -> None:
        self.allocate = allocate
        self.device, self.device_id = device, device_id
        self.cudart = cudart if cudart is not None else load_cudart()
        for name, argtypes in (
            ("cudaMemset", [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]),
            (
                "cudaMemcpy2D",
                [
                    ctypes.c_void_p,
                    ctypes.c_size_t,
                    ctypes.c_void_p,
                    ctypes.c_size_t,
                    ctypes.c_size_t,
                    ctypes.c_size_t,
                    ctypes.c_int,
                ],
            ),
            ("cudaDeviceSynchronize", []),
        ):
            getattr(self.cudart, name).argtypes = argtypes

    def zeros(self, shape: tuple[int, ...], dtype: type) -> DeviceBuffer:
        buffer = DeviceBuffer(None, tuple(shape), dtype)
        if buffer.nbytes:
            buffer.value = self.allocate(list(shape), dtype, self.device, self.device_id)
            self._check("cudaMemset", buffer.ptr, 0, buffer.nbytes)
            self._check("cudaDeviceSynchronize")
        return buffer

    def address(self, buffer: DeviceBuffer) -> int:
        return buffer.ptr

    def copy2d(
        self,
        dst: DeviceBuffer,
        dst_offset: int,
        dst_pitch: int,
        src: DeviceBuffer,
        src_offset: int,
        src_pitch: int,
        width: int,
        height: int,
    ) -> None:
        if not (width and height):
            return
        self._check(
            "cudaMemcpy2D",
            dst.ptr + dst_offset,
            dst_pitch,
            src.ptr + src_offset,
            src_pitch,
            width,
            height,
            CUDA_MEMCPY_DEVICE_TO_DEVICE,
        )

    def finish(self) -> None:
        # ONNX Runtime runs on its own stream and syncs it when a Run ends (its default), so
        # the cache is at rest between steps; these copies go on the legacy default stream,
        # hence one device-wide sync before the next step reads what they wrote
        self._check("cudaDeviceSynchronize")

    def to_numpy(self, buffer: DeviceBuffer) -> np.ndarray:
        if buffer.value is None:
            return np.zeros(buffer.shape, dtype=buffer.dtype)
        return buffer.value.numpy()  # a host copy: for tests and debugging

    def _check(self, name: str, *args) -> None:
        if code := getattr(self.cudart, name)(*args):
            raise RuntimeError(f"{name} failed with CUDA error {code}")


def load_cudart():
    """libcudart: the one the CUDA provider loaded (same soname), else one on the path."""
    names = ["libcudart.so.12", "libcudart.so.13", "libcudart.so"]
    if found := ctypes.util.find_library("cudart"):
        names.append(found)
    try:  # the nvidia-cuda-runtime wheel, where onnxruntime-gpu's CUDA libraries come from
        import nvidia.cuda_runtime

        for base in nvidia.cuda_runtime.__path__:
            names += sorted(str(p) for p in Path(base, "lib").glob("libcudart.so*"))
    except ImportError:
        pass
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise OSError("libcudart not found (tried " + ", ".join(names) + ")")


def memory_for(provider: str, allocate: Allocate) -> Memory:
    """Device memory for the CUDA provider (host memory if libcudart cannot be loaded:
    correct, but ONNX Runtime then copies the cache to the device at every step)."""
    if provider != "CUDAExecutionProvider":
        return HostMemory()
    try:
        return CudaMemory(allocate)
    except OSError as e:
        log.warning("KV cache stays in host memory (%s): every step copies it to the GPU", e)
        return HostMemory()
