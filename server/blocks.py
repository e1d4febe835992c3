"""KV cache bookkeeping in blocks: which fixed-size blocks each sequence holds, and prefix caching.

The paged KV cache is one pool of `num_blocks` blocks of `block_size` token positions each
(every block holds keys and values for every layer). A sequence's `BlockTable` lists its
blocks in order: position p lives in `blocks[p // block_size]` at offset `p % block_size`.
This module only decides which block ids go where; the runner owns the tensors.

Prefix caching works on full blocks. Once a block's tokens are all computed (`commit`), it is
registered under a chained hash: the digest of (the previous block's digest, this block's
token ids), so a block matches only after the same whole prefix. A new sequence (`admit`)
takes a reference on every leading full block found, and the runner computes from
`cached_tokens` on. A shared block is never written: only full, computed blocks are shared,
and everything a sequence still writes lies in blocks it alone holds.

Free blocks come in three kinds: plain ones (used before; never hashed, or hashed contents
forgotten), reused most-recently-freed first; evictable ones (registered, nobody holds them),
still findable by the prefix cache, the longest unused handed out first; and untouched ones,
never handed out, whose pages were never written. A block comes from the plain ones first;
then from the untouched ones while the evictable ones number no more than `cache_blocks` (the
prefix cache's budget); then from the evictable ones. So the pages touched stay as few as the
peak use and the cache's budget need. Writing a page for the first time costs its zeroing by
the kernel (a 2 MiB huge page for numpy's pools) and, in a virtual machine, the host's own
fault: measured in the engine (issue 20), kernel calls that wrote into new pages took 3-10 ms
instead of 0.6, half the attention time of a short-prompt workload, because with no budget a
prefix-caching server touched every block of its pool in turn (nearly every freed block is a
registered one). Every operation costs O(1) per block it touches; nothing scans the pool.

Hand-written because this bookkeeping is the engine's core and no serving library exposes
one apart from its own engine (vLLM's and nano-vllm's block managers are the models; their
code is not taken).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GIB = 1024**3
_DIGEST_BYTES = 16  # blake2b-128: a collision among 2^40 blocks has odds ~2^-48
_ROOT_DIGEST = b""  # the "previous block" of a sequence's first block
_INT32_MAX = 2**31 - 1


@dataclass(eq=False)  # a table is one sequence's: identity, not equal contents
class BlockTable:
    """One sequence's blocks, owned by the BlockManager (the only writer), read by the runner."""

    blocks: list[int] = field(default_factory=list)  # block ids, in position order
    # leading tokens found in the prefix cache at admission: their KV is already in `blocks`
    cached_tokens: int = 0
    # private bookkeeping, the manager's alone
    _hashed: int = field(default=0, repr=False)  # leading full blocks hashed (hit or committed)
    _digest: bytes = field(default=_ROOT_DIGEST, repr=False)  # digest of block `_hashed - 1`
    _query_tokens: int = field(default=0, repr=False)  # looked up at admission
    _counted: bool = field(default=False, repr=False)  # admission counted in the hit statistics
    _epoch: int = field(default=0, repr=False)  # the prefix cache's epoch when admitted
    _released: bool = field(default=False, repr=False)


@dataclass(slots=True)
class _Block:
    ref_count: int = 0
    digest: bytes | None = None  # set iff registered in the prefix cache
    token_bytes: bytes = b""  # the tokens it was registered with (int32), checked on a hit


class BlockManager:
    """The pool's bookkeeping: admission with prefix lookup, reservation, commit, release."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        prefix_caching: bool = True,
        cache_blocks: int | None = None,
    ) -> None:
        """`cache_blocks`: how many free blocks the prefix cache keeps before its least
        recently used is reused rather than a block never touched (None: the whole pool)."""
        if num_blocks < 0 or block_size < 1 or (cache_blocks is not None and cache_blocks < 0):
            raise ValueError(
                f"need num_blocks >= 0, block_size >= 1 and cache_blocks >= 0: {num_blocks}, "
                f"{block_size}, {cache_blocks}"
            )
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.queried_tokens = 0  # tokens looked up at admission (admissions that took effect)
        self.hit_tokens = 0  # of those, found in the prefix cache
        self._blocks = [_Block() for _ in range(num_blocks)]
        # free blocks used before, unregistered, as a stack: the most recently freed on top
        self._plain: list[int] = []
        self._untouched = 0  # blocks self._untouched .. num_blocks - 1 were never handed out
        self.cache_blocks = num_blocks if cache_blocks is None else cache_blocks
        self._evictable: OrderedDict[int, None] = OrderedDict()  # oldest first
        self._cached: dict[bytes, int] = {}  # digest -> registered block
        self._epoch = 0  # bumped by reset_prefix_cache: older tables register nothing more

    @property
    def free_blocks(self) -> int:
        """Blocks that can be handed out now: plain, evictable (cached) and untouched ones."""
        return len(self._plain) + len(self._evictable) + self.untouched_blocks

    @property
    def untouched_blocks(self) -> int:
        """Free blocks never handed out (counted in free_blocks)."""
        return self.num_blocks - self._untouched

    @property
    def used_blocks(self) -> int:
        """Blocks referenced by at least one sequence."""
        return self.num_blocks - self.free_blocks

    @property
    def evictable_blocks(self) -> int:
        """Free blocks whose contents the prefix cache can still find (counted in free_blocks)."""
        return len(self._evictable)

    def blocks_for(self, tokens: int) -> int:
        """Blocks needed to hold `tokens` positions."""
        if tokens < 0:
            raise ValueError(f"negative token count: {tokens}")
        return -(-tokens // self.block_size)

    def admit(self, token_ids: Sequence[int], lookup: bool = True) -> BlockTable:
        """A new table for a sequence of these tokens (its prompt; after a preemption, prompt and
        output so far), holding the leading full blocks found in the prefix cache.

        Never fails and allocates nothing else: the blocks it hits exist already (a hit on an
        evictable block takes it back from the free list). At most `(len - 1) // block_size`
        blocks can hit, since the last token is always computed again (the step needs its
        logits). Ask for the rest with `can_reserve` / `reserve`; if there is no room, `release`
        the table and the pool is as it was (the hit blocks go back as the most recently used).
        `lookup=False` skips the prefix cache (a sequence that must compute every position).
        """
        if len(token_ids) == 0:
            raise ValueError("admit needs at least one token")
        if not (self.prefix_caching and lookup):
            return BlockTable(_epoch=self._epoch)
        table = BlockTable(_query_tokens=len(token_ids), _epoch=self._epoch)
        size = self.block_size
        lookable = (len(token_ids) - 1) // size
        ids = _int32(token_ids[: lookable * size])
        digest = _ROOT_DIGEST
        for i in range(lookable):
            chunk = ids[i * size : (i + 1) * size].tobytes()
            digest = _chain(digest, chunk)
            block_id = self._cached.get(digest)
            if block_id is None or self._blocks[block_id].token_bytes != chunk:
                break
            self._reference(block_id)
            table.blocks.append(block_id)
            table._digest = digest
        table._hashed = len(table.blocks)
        table.cached_tokens = table._hashed * size
        return table

    def can_reserve(self, table: BlockTable, tokens: int) -> bool:
        """Whether the sequence can be given room to hold `tokens` tokens in all."""
        self._check_live(table)
        return self.blocks_for(tokens) - len(table.blocks) <= self.free_blocks

    def reserve(self, table: BlockTable, tokens: int) -> bool:
        """Allocate blocks so the sequence holds room for `tokens` tokens in all; False, with
        nothing changed, if there are not enough free blocks.

        The first success also counts the table's admission in `queried_tokens` / `hit_tokens`,
        so an admission rolled back for want of room (admit, no room, release) and tried
        again next step is counted once."""
        self._check_live(table)
        needed = self.blocks_for(tokens) - len(table.blocks)
        if needed > self.free_blocks:
            return False
        for _ in range(needed):
            table.blocks.append(self._allocate())
        if not table._counted and self.prefix_caching:
            table._counted = True
            self.queried_tokens += table._query_tokens
            self.hit_tokens += table.cached_tokens
        return True

    def commit(self, table: BlockTable, token_ids: Sequence[int], computed: int) -> None:
        """After a step: the first `computed` tokens of `token_ids` (the whole sequence) have
        their keys and values in the table's blocks. Every block they newly fill is hashed and
        registered in the prefix cache. If an equal block is registered already (two sequences
        computed the same prefix at once), that one stays registered and this one stays the
        sequence's own, to go back as a plain free block."""
        self._check_live(table)
        if computed > len(token_ids) or computed > len(table.blocks) * self.block_size:
            raise ValueError(
                f"commit {computed} tokens: the sequence has {len(token_ids)}, "
                f"its blocks hold {len(table.blocks) * self.block_size}"
            )
        full = computed // self.block_size
        if full <= table._hashed:
            return
        if self.prefix_caching and table._epoch == self._epoch:
            self._register(table, token_ids, full)
        table._hashed = full

    def release(self, table: BlockTable) -> None:
        """The sequence is done, cancelled or preempted: drop its references. Blocks nobody
        holds any more go to the free list; registered ones stay findable until handed out
        again. The table is emptied; releasing it twice raises ValueError (a scheduler bug)."""
        self._check_live(table)
        # last block first: a sequence's tail is evicted before its head, which more
        # sequences share and whose loss would make the tail unreachable anyway
        for block_id in reversed(table.blocks):
            block = self._blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.digest is None:
                    self._plain.append(block_id)
                else:
                    self._evictable[block_id] = None
        table.blocks = []
        table.cached_tokens = 0
        table._released = True

    def cleared(self) -> BlockManager:
        """A manager of the same pool with no sequences and nothing cached (after a crashed
        step), which still knows the blocks used before: they are handed out first."""
        fresh = BlockManager(self.num_blocks, self.block_size, self.prefix_caching)
        fresh.cache_blocks = self.cache_blocks
        fresh._plain = list(range(self._untouched - 1, -1, -1))
        fresh._untouched = self._untouched
        return fresh

    def reset_prefix_cache(self) -> None:
        """Forget every hash, so nothing computed before hits again (e.g. after a weights
        change). Evictable blocks become plain free blocks; blocks still held stay with their
        sequences (and their KV stays valid for them) but are no longer findable, and those
        sequences register no more blocks. O(blocks registered)."""
        for block_id in self._cached.values():
            block = self._blocks[block_id]
            block.digest, block.token_bytes = None, b""
        self._cached.clear()
        self._plain.extend(self._evictable)
        self._evictable.clear()
        self._epoch += 1

    def _register(self, table: BlockTable, token_ids: Sequence[int], full: int) -> None:
        size, start = self.block_size, table._hashed
        ids = _int32(token_ids[start * size : full * size])
        digest = table._digest
        for i in range(start, full):
            chunk = ids[(i - start) * size : (i - start + 1) * size].tobytes()
            digest = _chain(digest, chunk)
            if digest in self._cached:
                continue  # an equal block is registered: keep it, this one stays private
            block = self._blocks[table.blocks[i]]
            assert block.digest is None and block.ref_count == 1, "a committed block is shared"
            block.digest, block.token_bytes = digest, chunk
            self._cached[digest] = table.blocks[i]
        table._digest = digest

    def _reference(self, block_id: int) -> None:
        """One more holder of a registered block (taken back from the free list if idle)."""
        block = self._blocks[block_id]
        if block.ref_count == 0:
            del self._evictable[block_id]
        block.ref_count += 1

    def _allocate(self) -> int:
        """A free block for one sequence alone: a plain one if any; else an untouched one
        while the prefix cache keeps no more free blocks than its budget; else the evictable one
        unused longest, whose hash is forgotten (the module's docstring says why)."""
        if self._plain:
            block_id = self._plain.pop()
        elif self.untouched_blocks and len(self._evictable) <= self.cache_blocks:
            block_id = self._untouched
            self._untouched += 1
        else:
            block_id, _ = self._evictable.popitem(last=False)
            block = self._blocks[block_id]
            del self._cached[block.digest]
            block.digest, block.token_bytes = None, b""
        self._blocks[block_id].ref_count = 1
        return block_id

    def _check_live(self, table: BlockTable) -> None:
        if table._released:
            raise ValueError("block table used after release (released twice?)")


def _chain(previous: bytes, token_bytes: bytes) -> bytes:
    """A block's digest: over the previous block's digest and its own token ids."""
    return hashlib.blake2b(previous + token_bytes, digest_size=_DIGEST_BYTES).digest()


def _int32(token_ids: Sequence[int]) -> np.ndarray:
    """Token ids as int32 (what the digest covers); refuses ids that int32 cannot hold."""
    ids = np.asarray(token_ids)
    if ids.size == 0:
        return np.zeros(0, dtype=np.int32)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"token ids must be a 1-D integer sequence, got {ids.dtype} {ids.shape}")
    if ids.dtype != np.int32 and (ids.min() < 0 or ids.max() > _INT32_MAX):
        raise ValueError("token ids must lie in 0 .. 2**31-1")
    return ids.astype(np.int32, copy=False)


def kv_bytes_per_block(
    num_layers: int, heads: int, head_dim: int, block_size: int, itemsize: int
) -> int:
    """Bytes of one block: key and value for every layer and head at `block_size` positions
    (an int8 cache's scales are static per channel, not per block, so not counted)."""
    return 2 * num_layers * heads * head_dim * block_size * itemsize


def blocks_for_memory(
    memory_bytes: int, num_layers: int, heads: int, head_dim: int, block_size: int, itemsize: int
) -> int:
    """How many whole blocks fit in `memory_bytes`."""
    per_block = kv_bytes_per_block(num_layers, heads, head_dim, block_size, itemsize)
    if per_block <= 0 or memory_bytes < 0:
        raise ValueError(f"cannot size {memory_bytes} bytes in blocks of {per_block} bytes")
    return memory_bytes // per_block


def default_kv_memory_bytes(total_memory_bytes: int) -> int:
    """The KV pool's size when `--kv-cache-memory` is not given: a quarter of the memory, at
    most 4 GiB.

    A quarter leaves the rest to the weights, ONNX Runtime's arenas, the load client and other
    tenants of a shared host. 4 GiB holds ~58k tokens of GPT-2 124M at fp32 (72 KiB a token),
    ~233k at int8: 64 full 1024-token contexts nearly, more than the batch sizes that pay on
    CPU; beyond it preemption, not memory, is the better answer. Blocks are handed out lowest
    first and reused most-recent first, so pages of a lazily zeroed pool that were never used
    cost no resident memory."""
    if total_memory_bytes <= 0:
        raise ValueError(f"machine memory must be positive: {total_memory_bytes}")
    return min(total_memory_bytes // 4, 4 * GIB)


def machine_memory_bytes(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The memory this process may use: physical memory (sysconf), or the container's cgroup
    limit where one is lower (a pod sees the host's memory in /proc/meminfo and sysconf)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("memory.max", "memory/memory.limit_in_bytes"):  # cgroup v2, v1
        try:
            text = (cgroup_root / limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:  # v2 says "max" when unlimited
            total = int(text)
    return total
