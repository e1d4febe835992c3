"""The running batch's KV cache: one slot (row) per sequence in preallocated buffers.

Hand-written because it is the engine's core data structure and no serving library exposes
one for ONNX Runtime. Per layer, key and value buffers `[rows, H, capacity, D]`; row r holds
its sequence's first `lengths[r]` positions. The graph (export/gqa_graph.py) writes each new
key/value in place at the row's own length, so a decode step copies no cache at all, and
rows of any lengths sit side by side with no padding to align them.

Active rows are always `0 .. size-1` (the graph takes one contiguous block). New sequences
are appended at the end (`append`), a decode step advances the first rows by one token
(`advance`), and when sequences leave, `keep` moves the fewest rows to close the gaps
(survivors past the end fill holes), so a finished slot costs one row copy at most.
Buffers grow by doubling (rows up to the batch limit, capacity up to the model's context).
The buffers live in host or device memory (server/memory.py); the runner binds each row
block by address, and every copy here is one strided 2-D copy per buffer.

The cache owns its bookkeeping: only these methods change `size` and the row lengths; the
runner reads them (`lengths`) to place the graph's writes and reports what it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.memory import HostMemory, Memory


class CacheLost(RuntimeError):
    """The cache's contents are gone (a growth failed half-way): every running sequence with
    them. The engine fails them all and starts over with a new cache."""


@dataclass
class SlotCache:
    num_layers: int
    heads: int
    head_dim: int
    max_rows: int
    max_length: int
    dtype: type = np.float32
    memory: Memory = field(default_factory=HostMemory)
    layers: list[tuple] = field(init=False)  # per layer (key, value) buffers [rows, H, cap, D]
    _size: int = field(init=False, default=0)  # active rows
    _lengths: np.ndarray = field(init=False, repr=False)  # [rows] int64, tokens held per row

    def __post_init__(self) -> None:
        self._lengths = np.zeros(0, dtype=np.int64)
        self.layers = [self._zeros(0, 0) for _ in range(self.num_layers)]

    @property
    def size(self) -> int:
        """Active rows: `0 .. size-1`."""
        return self._size

    @property
    def lengths(self) -> np.ndarray:
        """Tokens held by each active row, `[size]` int64 (a read-only view)."""
        view = self._lengths[: self._size]
        view.flags.writeable = False
        return view

    @property
    def rows(self) -> int:
        """Rows allocated (active or not)."""
        return int(self._lengths.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.layers[0][0].shape[2]) if self.layers else 0

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)

    def reserve(self, rows: int, length: int) -> None:
        """Make room for `rows` active rows of up to `length` tokens (amortised doubling)."""
        if rows > self.max_rows or length > self.max_length:
            raise ValueError(f"cache limit: {rows} rows x {length} tokens")
        if rows <= self.rows and length <= self.capacity:
            return
        new_rows = min(self.max_rows, max(rows, 2 * self.rows, 1))
        new_cap = min(self.max_length, max(length, 2 * self.capacity, 64))
        if length <= self.capacity:
            new_cap = self.capacity
        n, old_cap = self._size, self.capacity  # `capacity` reads layer 0, replaced first
        # layer by layer, each old layer let go as its copy replaces it: the peak is the new
        # cache plus one old layer, not old and new side by side
        for i in range(len(self.layers)):
            try:
                self.layers[i] = self._grown(self.layers[i], old_cap, new_rows, new_cap)
            except Exception as e:
                if i == 0:
                    raise  # nothing changed yet: the cache is as it was
                self._lose()
                raise CacheLost(f"growing the KV cache to {new_rows} x {new_cap}: {e}") from e
        lengths = np.zeros(new_rows, dtype=np.int64)
        lengths[:n] = self._lengths[:n]
        self._lengths = lengths

    def append(self, lengths: np.ndarray | list[int]) -> None:
        """Rows `size ..` now hold new sequences of these lengths (written by the graph, after
        `reserve` made room)."""
        start, stop = self._size, self._size + len(lengths)
        if stop > self.rows:
            raise ValueError(f"append {len(lengths)} rows to {start}: only {self.rows} reserved")
        self._lengths[start:stop] = lengths
        self._size = stop

    def advance(self, rows: int) -> None:
        """Rows `0 .. rows-1` each took one more token (a decode step over the first rows)."""
        if rows > self._size:
            raise ValueError(f"advance {rows} rows: only {self._size} active")
        self._lengths[:rows] += 1

    def block_shape(self, start: int, stop: int) -> tuple[int, int, int, int]:
        return (stop - start, self.heads, self.capacity, self.head_dim)

    def addresses(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Per layer, where rows start..stop-1 begin in the key and value buffers: the block
        is contiguous, so the graph reads and writes it in place."""
        offset = start * self._row_bytes()
        return [tuple(self.memory.address(b) + offset for b in pair) for pair in self.layers]

    def keep(self, survivors: list[int]) -> list[int]:
        """Keep these active rows; return their new order (new row i = old row order[i]).

        Survivors already inside the new size stay put; those beyond it fill the holes."""
        new_size = len(survivors)
        kept = set(survivors)
        holes = [r for r in range(new_size) if r not in kept]
        movers = [r for r in survivors if r >= new_size]
        row, pitch = self._row_bytes(), self._token_bytes(self.capacity)
        for hole, src in zip(holes, movers, strict=True):
            length = int(self._lengths[src])
            for pair in self.layers:
                for buffer in pair:  # each head's first `length` tokens
                    self.memory.copy2d(
                        buffer,
                        hole * row,
                        pitch,
                        buffer,
                        src * row,
                        pitch,
                        self._token_bytes(length),
                        self.heads,
                    )
            self._lengths[hole] = length
        if holes:
            self.memory.finish()
        self._size = new_size
        moved = dict(zip(holes, movers, strict=True))
        return [moved.get(r, r) for r in range(new_size)]

    def _grown(self, layer: tuple, old_cap: int, rows: int, capacity: int) -> tuple:
        """A bigger copy of one layer's (key, value) buffers: each head's first tokens."""
        used = self._token_bytes(int(self.lengths.max(initial=0)))
        old_pitch, new_pitch = self._token_bytes(old_cap), self._token_bytes(capacity)
        grown = self._zeros(rows, capacity)
        for dst, src in zip(grown, layer, strict=True):
            self.memory.copy2d(dst, 0, new_pitch, src, 0, old_pitch, used, self._size * self.heads)
        self.memory.finish()  # before the old buffer can be freed (device copies)
        return grown

    def _lose(self) -> None:
        """After a growth that failed half-way (layers of two shapes): empty and unusable
        until the engine replaces it."""
        self.layers, self._size = [], 0
        self._lengths = np.zeros(0, dtype=np.int64)

    def _token_bytes(self, tokens: int) -> int:
        return tokens * self.head_dim * np.dtype(self.dtype).itemsize

    def _row_bytes(self) -> int:
        return self.heads * self._token_bytes(self.capacity)

    def _zeros(self, rows: int, cap: int) -> tuple:
        shape = (rows, self.heads, cap, self.head_dim)
        return self.memory.zeros(shape, self.dtype), self.memory.zeros(shape, self.dtype)
