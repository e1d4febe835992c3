"""BlockManager: block accounting, prefix caching on chained hashes of full blocks, LRU
eviction, and (a hypothesis state machine) the invariants under any order of admit /
reserve / commit / release / preempt, with a simulated runner writing token ids into blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from server.blocks import (
    GIB,
    BlockManager,
    BlockTable,
    blocks_for_memory,
    default_kv_memory_bytes,
    kv_bytes_per_block,
    machine_memory_bytes,
)

BS = 4  # block size of the hand-written tests


def computed(manager: BlockManager, tokens: list[int]) -> BlockTable:
    """A sequence admitted, given room for all its tokens, and fully computed."""
    table = manager.admit(tokens)
    assert manager.reserve(table, len(tokens))
    manager.commit(table, tokens, len(tokens))
    return table


def state(manager: BlockManager) -> tuple:
    """Everything observable about the pool, to compare before and after."""
    refs = tuple(b.ref_count for b in manager._blocks)
    return (
        refs,
        list(manager._plain),
        list(manager._evictable),
        dict(manager._cached),
        manager.queried_tokens,
        manager.hit_tokens,
    )


# --- accounting ---------------------------------------------------------------------------


def test_blocks_for_rounds_up_to_whole_blocks():
    manager = BlockManager(4, BS)
    assert [manager.blocks_for(n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
    with pytest.raises(ValueError):
        manager.blocks_for(-1)


@pytest.mark.parametrize("caching", [False, True])
def test_reserve_and_release_account_every_block(caching):
    manager = BlockManager(8, BS, prefix_caching=caching)
    table = manager.admit(list(range(10)))
    assert table.blocks == [] and table.cached_tokens == 0
    assert manager.reserve(table, 10)
    assert len(table.blocks) == 3 and len(set(table.blocks)) == 3
    assert (manager.free_blocks, manager.used_blocks) == (5, 3)
    assert manager.reserve(table, 12)  # still within the three blocks
    assert len(table.blocks) == 3
    assert manager.reserve(table, 13)
    assert (manager.free_blocks, manager.used_blocks) == (4, 4)
    other = manager.admit([7])
    assert manager.reserve(other, 16)
    assert set(other.blocks).isdisjoint(table.blocks)
    assert (manager.free_blocks, manager.used_blocks) == (0, 8)
    manager.release(table)
    manager.release(other)
    assert (manager.free_blocks, manager.used_blocks) == (8, 0)
    assert table.blocks == [] and other.blocks == []


def test_failed_reserve_changes_nothing():
    manager = BlockManager(6, BS)
    cached = computed(manager, list(range(9)))  # 3 blocks, 2 of them registered
    manager.release(cached)
    holder = computed(manager, [50, 51, 52])  # takes a plain block, evicts nothing
    table = manager.admit(list(range(9)))
    assert table.cached_tokens == 8
    before, blocks_before = state(manager), list(table.blocks)
    assert not manager.can_reserve(table, 9 + 5 * BS)
    assert not manager.reserve(table, 9 + 5 * BS)
    assert state(manager) == before and table.blocks == blocks_before
    assert manager.can_reserve(table, 9)
    assert manager.reserve(table, 9)
    manager.release(table)
    manager.release(holder)
    assert manager.free_blocks == 6


def test_free_and_used_always_cover_the_pool():
    manager = BlockManager(5, BS)
    tables = []
    for tokens in ([1, 2, 3, 4, 5], [1, 2, 3, 4, 9], [8] * 7):
        tables.append(manager.admit(tokens))
        assert manager.free_blocks + manager.used_blocks == 5
        manager.reserve(tables[-1], len(tokens))
        manager.commit(tables[-1], tokens, len(tokens))
        assert manager.free_blocks + manager.used_blocks == 5
    assert manager.used_blocks == 5  # 2 + 1 ([1,2,3,4] shared by the first two) + 2
    for table in tables:
        manager.release(table)
        assert manager.free_blocks + manager.used_blocks == 5
    assert manager.used_blocks == 0


def test_releasing_twice_or_using_a_released_table_raises():
    manager = BlockManager(4, BS)
    table = computed(manager, [1, 2, 3, 4, 5])
    manager.release(table)
    free = manager.free_blocks
    with pytest.raises(ValueError, match="after release"):
        manager.release(table)
    with pytest.raises(ValueError, match="after release"):
        manager.reserve(table, 8)
    with pytest.raises(ValueError, match="after release"):
        manager.commit(table, [1, 2, 3, 4, 5], 5)
    assert manager.free_blocks == free


def test_commit_refuses_tokens_beyond_the_reserved_blocks():
    manager = BlockManager(4, BS)
    table = manager.admit(list(range(9)))
    manager.reserve(table, 4)
    with pytest.raises(ValueError):
        manager.commit(table, list(range(9)), 5)
    with pytest.raises(ValueError):
        manager.commit(table, list(range(3)), 4)


def test_admit_refuses_empty_and_out_of_range_token_ids():
    manager = BlockManager(4, BS)
    with pytest.raises(ValueError):
        manager.admit([])
    before = state(manager)
    with pytest.raises(ValueError, match="token ids"):
        manager.admit([2**31] * 5)  # the digest covers int32 ids: refused, not wrapped
    assert state(manager) == before
    tokens = [5, 6, 7, 2**31]  # one block: no lookup at admission, hashed at commit
    table = manager.admit(tokens)
    manager.reserve(table, 4)
    with pytest.raises(ValueError, match="token ids"):
        manager.commit(table, tokens, 4)


# --- prefix hits ---------------------------------------------------------------------------


def test_same_three_block_prefix_shares_the_first_blocks():
    manager = BlockManager(16, BS)
    prefix = list(range(100, 100 + 3 * BS))
    first = computed(manager, prefix + [1, 2])
    second = manager.admit(prefix + [3])
    assert second.cached_tokens == 3 * BS
    assert second.blocks == first.blocks[:3]
    assert manager.used_blocks == 4  # nothing new allocated by admit
    assert manager.reserve(second, 3 * BS + 1)
    assert second.blocks[3] not in first.blocks  # the tail is the sequence's own


def test_prefix_equal_for_two_and_a_half_blocks_hits_two():
    manager = BlockManager(16, BS)
    tokens = list(range(3 * BS + 1))
    computed(manager, tokens)
    other = tokens[: 2 * BS + 2] + [999, 998, 997]
    table = manager.admit(other)
    assert table.cached_tokens == 2 * BS and len(table.blocks) == 2


def test_the_last_token_is_never_a_hit():
    manager = BlockManager(16, BS)
    tokens = list(range(2 * BS))
    first = computed(manager, tokens)
    table = manager.admit(tokens)  # both blocks registered, only the first can hit
    assert table.cached_tokens == BS and table.blocks == first.blocks[:1]
    assert manager.admit(tokens[:1]).cached_tokens == 0


def test_partial_blocks_are_never_registered():
    manager = BlockManager(16, BS)
    computed(manager, list(range(BS + 3)))
    table = manager.admit(list(range(BS + 3)) + [0])
    assert table.cached_tokens == BS


def test_same_block_after_a_different_prefix_does_not_hit():
    manager = BlockManager(16, BS)
    x, y, z, w = ([k] * BS for k in (1, 2, 3, 4))
    computed(manager, x + y + [0])  # registers x, then y after x
    computed(manager, z + w + [0])  # registers z, then w after z
    table = manager.admit(z + y + [0])
    assert table.cached_tokens == BS  # z hits, y after z is not y after x


def test_blocks_are_registered_as_chunks_fill_them():
    manager = BlockManager(16, BS)
    tokens = list(range(3 * BS))
    table = manager.admit(tokens)
    manager.reserve(table, BS + 2)
    manager.commit(table, tokens, BS + 2)  # one full block so far
    assert manager.admit(tokens).cached_tokens == BS
    manager.reserve(table, 3 * BS)
    manager.commit(table, tokens, 3 * BS)
    assert manager.admit(tokens + [5]).cached_tokens == 3 * BS


def test_two_sequences_computing_the_same_prefix_keep_the_first_registered():
    manager = BlockManager(16, BS)
    tokens = list(range(2 * BS + 1))
    a, b = manager.admit(tokens), manager.admit(tokens)
    manager.reserve(a, len(tokens))
    manager.reserve(b, len(tokens))
    manager.commit(a, tokens, len(tokens))
    manager.commit(b, tokens, len(tokens))
    assert set(a.blocks).isdisjoint(b.blocks)
    later = manager.admit(tokens + [1])
    assert later.blocks == a.blocks[:2]
    manager.release(b)  # b's duplicates go back as plain blocks
    assert manager.evictable_blocks == 0
    manager.release(a)
    manager.release(later)
    assert manager.evictable_blocks == 2 and manager.free_blocks == 16


def test_hit_statistics_count_each_admission_once():
    manager = BlockManager(4, BS)
    tokens = list(range(2 * BS + 1))
    manager.release(computed(manager, tokens))
    assert (manager.queried_tokens, manager.hit_tokens) == (len(tokens), 0)
    long = tokens + list(range(50, 50 + 3 * BS))
    for _ in range(3):  # no room: admitted, refused, released, tried again next step
        table = manager.admit(long)
        assert not manager.reserve(table, len(long))
        manager.release(table)
    assert (manager.queried_tokens, manager.hit_tokens) == (len(tokens), 0)
    table = manager.admit(tokens)
    assert manager.reserve(table, len(tokens))
    assert manager.reserve(table, len(tokens) + BS)  # counted once per table
    assert manager.queried_tokens == 2 * len(tokens)
    assert manager.hit_tokens == 2 * BS


def test_without_prefix_caching_nothing_ever_hits():
    manager = BlockManager(16, BS, prefix_caching=False)
    tokens = list(range(3 * BS + 1))
    first = computed(manager, tokens)
    assert manager.admit(tokens).cached_tokens == 0
    manager.release(first)
    assert manager.evictable_blocks == 0
    assert manager.admit(tokens).cached_tokens == 0
    assert manager.hit_tokens == 0


# --- eviction ------------------------------------------------------------------------------


def test_released_blocks_stay_cached_and_evict_longest_unused_first():
    manager = BlockManager(6, BS)
    old = computed(manager, [1] * BS + [2] * BS + [0])  # 2 registered + 1 plain
    new = computed(manager, [3] * BS + [4] * BS + [0])
    old_blocks, new_blocks = old.blocks[:2], new.blocks[:2]
    manager.release(old)
    manager.release(new)
    assert manager.evictable_blocks == 4 and manager.free_blocks == 6
    taker = manager.admit([9])
    assert manager.reserve(taker, 2 * BS)  # the two plain blocks first: nothing evicted
    assert manager.evictable_blocks == 4
    assert manager.reserve(taker, 3 * BS)  # then the longest unused, its tail first
    assert taker.blocks[2] == old_blocks[1]
    assert manager.reserve(taker, 4 * BS)
    assert taker.blocks[3] == old_blocks[0]
    assert manager.admit([1] * BS + [2] * BS + [0]).cached_tokens == 0
    assert manager.admit([3] * BS + [4] * BS + [0]).blocks == new_blocks


def test_untouched_blocks_wait_for_the_used_ones_and_the_cache_budget():
    manager = BlockManager(8, BS, cache_blocks=2)
    assert (manager.free_blocks, manager.untouched_blocks) == (8, 8)
    first = computed(manager, [1] * BS + [2] * BS + [3] * BS + [0])  # 3 registered + 1 plain
    assert first.blocks == [0, 1, 2, 3]  # untouched ones, in order
    manager.release(first)
    assert (manager.evictable_blocks, manager.untouched_blocks) == (3, 4)
    taker = manager.admit([9])
    assert manager.reserve(taker, BS)
    assert taker.blocks == [3]  # the plain block used before, not an untouched one
    assert manager.reserve(taker, 2 * BS)
    assert taker.blocks[1] == 2  # the cache holds 3 > 2 free blocks: its oldest goes (a tail)
    assert manager.reserve(taker, 3 * BS)
    assert taker.blocks[2] == 4  # now it holds 2 (its budget): an untouched block
    assert manager.admit([1] * BS + [2] * BS + [0]).cached_tokens == 2 * BS  # kept


def test_without_a_free_used_block_an_untouched_one_is_taken_whatever_the_budget():
    manager = BlockManager(3, BS, cache_blocks=0)
    held = computed(manager, [1] * BS + [0])
    other = manager.admit([5])
    assert manager.reserve(other, BS) and other.blocks == [2]
    manager.release(held)  # a registered block and a plain one come back
    third = manager.admit([6])
    assert manager.reserve(third, 2 * BS)
    assert third.blocks == [1, 0]  # the plain one, then the cached one (a budget of 0)
    assert manager.untouched_blocks == 0


def test_cleared_forgets_sequences_and_hashes_but_reuses_the_used_blocks_first():
    manager = BlockManager(6, BS)
    computed(manager, [1] * BS + [2] * BS + [0])  # blocks 0-2, never released
    cleared = manager.cleared()
    assert (cleared.free_blocks, cleared.used_blocks, cleared.untouched_blocks) == (6, 0, 3)
    table = cleared.admit([1] * BS + [2] * BS + [0])
    assert table.cached_tokens == 0
    assert cleared.reserve(table, 4 * BS) and table.blocks == [0, 1, 2, 3]


def test_a_hit_takes_an_evictable_block_back():
    manager = BlockManager(3, BS)
    tokens = [1] * BS + [2] * BS + [0]
    manager.release(computed(manager, tokens))
    assert manager.free_blocks == 3
    table = manager.admit(tokens)
    assert table.cached_tokens == 2 * BS
    assert (manager.free_blocks, manager.evictable_blocks) == (1, 0)
    assert manager.reserve(table, len(tokens))
    assert not manager.reserve(manager.admit([5]), 1)  # the hit blocks are not handed out


def test_an_evicted_block_no_longer_hits_under_its_old_hash():
    manager = BlockManager(2, BS)
    tokens = [7] * BS + [0]
    first = computed(manager, tokens)
    cached = first.blocks[0]
    manager.release(first)
    other = computed(manager, [8] * (2 * BS))  # takes the plain block, then evicts `cached`
    assert cached in other.blocks
    assert manager.admit(tokens).cached_tokens == 0
    assert manager.admit([8] * (2 * BS) + [1]).cached_tokens == 2 * BS


def test_reset_prefix_cache_forgets_every_hash():
    manager = BlockManager(8, BS)
    tokens = list(range(2 * BS + 1))
    manager.release(computed(manager, tokens))
    live = manager.admit(tokens + list(range(50, 50 + BS)))
    assert live.cached_tokens == 2 * BS
    manager.reset_prefix_cache()
    assert manager.evictable_blocks == 0 and manager.free_blocks == 6
    assert manager.admit(tokens).cached_tokens == 0
    full = tokens + list(range(50, 50 + BS))
    manager.reserve(live, len(full))
    manager.commit(live, full, len(full))  # admitted before the reset: registers nothing
    assert manager.admit(full + [1]).cached_tokens == 0
    manager.release(live)
    assert manager.evictable_blocks == 0 and manager.free_blocks == 8


# --- sizing --------------------------------------------------------------------------------


def test_blocks_for_memory_counts_keys_and_values_of_every_layer():
    per_block = kv_bytes_per_block(12, 12, 64, 16, 4)  # GPT-2 124M, fp32
    assert per_block == 2 * 12 * 12 * 64 * 16 * 4
    assert blocks_for_memory(GIB, 12, 12, 64, 16, 4) == GIB // per_block
    assert blocks_for_memory(per_block - 1, 12, 12, 64, 16, 4) == 0
    assert blocks_for_memory(GIB, 12, 12, 64, 16, 1) == 4 * blocks_for_memory(
        GIB, 12, 12, 64, 16, 4
    )
    with pytest.raises(ValueError):
        blocks_for_memory(GIB, 0, 12, 64, 16, 4)


def test_default_kv_memory_is_a_quarter_capped_at_four_gib():
    assert default_kv_memory_bytes(2 * GIB) == GIB // 2
    assert default_kv_memory_bytes(16 * GIB) == 4 * GIB
    assert default_kv_memory_bytes(512 * GIB) == 4 * GIB
    with pytest.raises(ValueError):
        default_kv_memory_bytes(0)


def test_machine_memory_honours_a_lower_cgroup_limit(tmp_path):
    physical = machine_memory_bytes(tmp_path / "none")
    assert physical > 0
    (tmp_path / "memory.max").write_text("max\n")
    assert machine_memory_bytes(tmp_path) == physical
    (tmp_path / "memory.max").write_text(f"{GIB}\n")
    assert machine_memory_bytes(tmp_path) == min(GIB, physical)
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(2**63 - 4096))  # v1 unlimited
    assert machine_memory_bytes(v1) == physical


# --- invariants under any order of operations ----------------------------------------------

PREFIXES = [[], [1, 2, 3, 1, 2, 3], [1, 2, 3, 1, 0, 0, 0], [2, 2, 2, 2, 2, 2, 2, 2]]


class BlockMachine(RuleBasedStateMachine):
    """The scheduler and runner around a small pool: sequences from a few shared prefixes over
    a tiny vocabulary (equal blocks at different places are common), chunked prefill, decode,
    preemption by recompute. The simulated runner writes each token id into its block's slot,
    so a hit can be checked against what is really in the cache."""

    def __init__(self) -> None:
        super().__init__()
        self.manager = BlockManager(0, 1)  # replaced by `start`
        self.seqs: dict[int, dict] = {}  # id -> {"table", "tokens", "computed"}
        self.contents: dict[int, list[int | None]] = {}  # block -> token id per slot
        self.seen: list[list[int]] = []  # tokens of sequences admitted so far
        self.next_id = 0
        self.resets = 0

    @initialize(
        num_blocks=st.integers(1, 14),
        block_size=st.integers(1, 4),
        caching=st.booleans(),
        cache_blocks=st.none() | st.integers(0, 4),
    )
    def start(self, num_blocks: int, block_size: int, caching: bool, cache_blocks) -> None:
        self.manager = BlockManager(num_blocks, block_size, caching, cache_blocks)
        self.contents = {b: [None] * block_size for b in range(num_blocks)}

    @rule(data=st.data(), tail=st.lists(st.integers(0, 3), max_size=8))
    def admit(self, data: st.DataObject, tail: list[int]) -> None:
        """A new sequence: a shared prefix, or the tokens of an earlier sequence, and a tail."""
        prefix = data.draw(st.sampled_from(PREFIXES + self.seen[-4:]))
        cut = data.draw(st.integers(0, len(prefix)))
        tokens = prefix[:cut] + tail
        if tokens:
            self._admit(tokens)

    @precondition(lambda self: self.seqs)
    @rule(data=st.data(), chunk=st.integers(1, 9), generated=st.integers(0, 3))
    def step(self, data: st.DataObject, chunk: int, generated: int) -> None:
        """Reserve room for the next chunk, write it, commit; at the end, sample a token."""
        seq = self.seqs[data.draw(st.sampled_from(sorted(self.seqs)))]
        table, tokens, done = seq["table"], seq["tokens"], seq["computed"]
        target = min(len(tokens), done + chunk)
        before, before_blocks = state(self.manager), list(table.blocks)
        if not self.manager.reserve(table, target):
            event("reserve refused")
            assert state(self.manager) == before and table.blocks == before_blocks
            assert self.manager.blocks_for(target) - len(table.blocks) > self.manager.free_blocks
            return
        assert len(table.blocks) == max(self.manager.blocks_for(target), len(before_blocks))
        if before[2] != list(self.manager._evictable):
            event("evicted a cached block")
        self._write(seq, done, target)
        self.manager.commit(table, tokens, target)
        seq["computed"] = target
        if target == len(tokens):
            tokens.append(generated)  # the step's sampled token, computed next step

    @precondition(lambda self: self.seqs)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        seq = self.seqs.pop(data.draw(st.sampled_from(sorted(self.seqs))))
        self.manager.release(seq["table"])
        with pytest.raises(ValueError):
            self.manager.release(seq["table"])

    @precondition(lambda self: self.seqs)
    @rule(data=st.data())
    def preempt(self, data: st.DataObject) -> None:
        """Recompute: drop the blocks, admit again with everything so far."""
        seq = self.seqs.pop(data.draw(st.sampled_from(sorted(self.seqs))))
        self.manager.release(seq["table"])
        self._admit(seq["tokens"])

    @rule(now=st.integers(0, 7))
    def reset(self, now: int) -> None:
        if now:  # rarely: a reset makes every later hit impossible
            return
        self.manager.reset_prefix_cache()
        self.resets += 1

    def _admit(self, tokens: list[int]) -> None:
        manager = self.manager
        free_before = manager.free_blocks
        table = manager.admit(tokens)
        size = manager.block_size
        assert table.cached_tokens == len(table.blocks) * size
        event(f"admitted with {min(len(table.blocks), 3)} blocks hit")
        assert table.cached_tokens <= ((len(tokens) - 1) // size) * size  # never the last token
        if not manager.prefix_caching:
            assert table.cached_tokens == 0
        # every hit reproduces exactly the tokens in the cache's slots
        for p in range(table.cached_tokens):
            assert self.contents[table.blocks[p // size]][p % size] == tokens[p]
        assert manager.free_blocks >= free_before - len(table.blocks)
        self.seen.append(list(tokens))
        seq = {"table": table, "tokens": tokens, "computed": table.cached_tokens}
        self.seqs[self.next_id] = seq
        self.next_id += 1

    def _write(self, seq: dict, start: int, stop: int) -> None:
        """The runner: positions start..stop-1, each in a block this sequence alone holds."""
        size, table = self.manager.block_size, seq["table"]
        assert start >= table.cached_tokens
        for p in range(start, stop):
            block_id = table.blocks[p // size]
            assert self.manager._blocks[block_id].ref_count == 1, "writing a shared block"
            assert self.manager._blocks[block_id].digest is None, "writing a registered block"
            self.contents[block_id][p % size] = seq["tokens"][p]

    @invariant()
    def bookkeeping_is_consistent(self) -> None:
        manager = self.manager
        holders: dict[int, list[dict]] = {}
        for seq in self.seqs.values():
            assert len(set(seq["table"].blocks)) == len(seq["table"].blocks)
            for block_id in seq["table"].blocks:
                holders.setdefault(block_id, []).append(seq)
        plain, evictable = manager._plain, set(manager._evictable)
        touched = set(range(manager.num_blocks - manager.untouched_blocks))
        assert len(set(plain)) == len(plain) and set(plain).isdisjoint(evictable)
        assert set(plain) | evictable | set(holders) == touched  # the rest never handed out
        assert set(holders).isdisjoint(set(plain) | evictable)
        for block_id, block in enumerate(manager._blocks):
            held_by = holders.get(block_id, [])
            assert block.ref_count == len(held_by) >= 0
            if block_id in evictable:
                assert block.digest is not None
            if block_id in plain:
                assert block.digest is None
            if len(held_by) > 1:  # shared: a full block every holder has computed already
                index = held_by[0]["table"].blocks.index(block_id)
                for seq in held_by:
                    assert seq["table"].blocks.index(block_id) == index
                    assert seq["computed"] >= (index + 1) * manager.block_size
                assert block.digest is not None or self.resets > 0
        for digest, block_id in manager._cached.items():
            block = manager._blocks[block_id]
            assert block.digest == digest
            # a registered block holds exactly the tokens it was registered with
            registered = np.frombuffer(block.token_bytes, dtype=np.int32).tolist()
            assert registered == self.contents[block_id]
        assert sum(b.digest is not None for b in manager._blocks) == len(manager._cached)
        assert manager.free_blocks + manager.used_blocks == manager.num_blocks
        assert 0 <= manager.hit_tokens <= manager.queried_tokens


BlockMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBlockInvariants = BlockMachine.TestCase
