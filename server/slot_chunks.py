"""The fused graph (CUDA; artifacts exported before the cut) under the one scheduler: a plan
of chunks run over the slot cache.

The fused graph keeps each sequence in a row of one contiguous cache (server/kv_cache.py
SlotCache) and has two calls (server/runner.py): prefill, which appends a row per prompt,
and decode, which feeds one token to every row. So the scheduler runs it with whole prompts
(`chunked_prefill` off): every running sequence decodes every step, and a prompt runs whole.
`SlotPool` is the cache the scheduler holds: the slot cache, which request owns each row,
and a BlockManager that only counts (sized so it never runs out: the slot cache's own
growth is the memory bound; prefix caching off, as rows cannot share blocks).

`execute_slots` runs a plan: rows whose sequence has no decoding chunk (finished,
cancelled, expired) leave first (the cache moves the fewest rows to close the gaps), then
one decode call over the rows, then each new prompt group's prefill appends its rows. A call
that raises fails only its own requests, and a failed prefill appends no row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from server.blocks import BlockManager
from server.kv_cache import CacheLost, SlotCache
from server.request import Request
from server.step import Batch, ModelOutput, StepPlan

PREFILL_PADDING = 0.25  # padded prompt tokens allowed per batched prefill, over the real ones


class SlotPool:
    """The slot cache, its rows' owners, and block bookkeeping that never runs dry."""

    def __init__(self, new_cache: Callable[[], SlotCache], max_rows: int, block_size: int):
        self._new_cache = new_cache
        self.slots = new_cache()
        self.rows: list[Request] = []  # rows[i] owns row i of the slot cache
        capacity = max_rows * -(-self.slots.max_length // block_size)
        self.blocks = BlockManager(capacity, block_size, prefix_caching=False)
        self.prefix_caching = False

    @property
    def nbytes(self) -> int:
        return self.slots.nbytes

    def reset(self) -> None:
        """After a step that crashed: an empty cache (the old one may disagree with `rows`)."""
        self.slots = self._new_cache()
        self.rows = []
        self.blocks = BlockManager(self.blocks.num_blocks, self.blocks.block_size, False)


def prefill_groups(requests: list[Request]) -> list[list[Request]]:
    """New requests by prompt length, one batched prefill per group.

    A batched prefill pads every prompt to the longest, and padding costs as much compute as
    real tokens (a 16-token prompt beside a 256-token one costs 16x). Groups are cut where
    padding would exceed PREFILL_PADDING of the group's real tokens."""
    groups: list[list[Request]] = []
    tokens = 0
    for request in sorted(requests, key=lambda r: len(r.token_ids)):
        n = len(request.token_ids)  # the longest so far: prompts come shortest first
        if not groups or (len(groups[-1]) + 1) * n > (1 + PREFILL_PADDING) * (tokens + n):
            groups.append([])
            tokens = 0
        groups[-1].append(request)
        tokens += n
    return groups


def execute_slots(runner, plan: StepPlan, pool: SlotPool) -> ModelOutput:
    """Run a whole-prompt plan over the slot cache (`runner`: server/runner.py OnnxRunner,
    or a fake with its `prefill` and `decode_step`). Logits come back in chunk order."""
    decoding = {id(c.request) for c in plan.chunks if c.start > 0}
    _keep_rows(pool, [i for i, r in enumerate(pool.rows) if id(r) in decoding])
    logits: dict[int, np.ndarray] = {}  # id(request) -> its next-token logits [V]
    failed: list[Batch] = []
    if pool.rows:
        tokens = np.array([r.token_ids[-1] for r in pool.rows], dtype=np.int64)  # [B]
        batch = _call(runner.decode_step, pool, tuple(pool.rows), tokens)
        _collect(batch, logits, failed)
    new = [c.request for c in plan.chunks if c.start == 0]
    for group in prefill_groups(new):
        batch = _call(runner.prefill, pool, tuple(group), [r.token_ids for r in group])
        _collect(batch, logits, failed)
        if batch.error is None:
            pool.rows += group
    sampled = tuple(c.request for c in plan.chunks if id(c.request) in logits)
    rows = np.stack([logits[id(r)] for r in sampled]) if sampled else None
    return ModelOutput(sampled=Batch(sampled, rows) if sampled else None, failed=tuple(failed))


def _keep_rows(pool: SlotPool, survivors: list[int]) -> None:
    if len(survivors) < len(pool.rows):
        order = pool.slots.keep(survivors)
        pool.rows = [pool.rows[i] for i in order]


def _call(model_call, pool: SlotPool, requests: tuple[Request, ...], inputs) -> Batch:
    try:
        return Batch(requests, model_call(pool.slots, inputs))
    except CacheLost:
        raise  # every row's cache is gone, not just this call's: the engine starts over
    except Exception as error:  # a bad call fails its own requests, not the server
        return Batch(requests, error=error)


def _collect(batch: Batch, logits: dict[int, np.ndarray], failed: list[Batch]) -> None:
    if batch.error is not None:
        failed.append(batch)
        return
    for row, request in enumerate(batch.requests):
        logits[id(request)] = batch.logits[row]
