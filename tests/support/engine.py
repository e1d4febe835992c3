"""Engine fakes shared by the scheduler, update and engine tests.

`TokenEchoRunner`'s "KV cache" is the real SlotCache holding the token ids themselves, so
after any sequence of admits, row moves and appends a test can check that every running
row's cache holds exactly its own prompt and output, in the right row (`check_cache`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

import server.update
from server.blocks import BlockManager
from server.config import ServeConfig
from server.engine import Engine, execute_chunks
from server.kv_cache import SlotCache
from server.request import Request, RequestStatus, StreamEvent
from server.sampling import SamplingParams
from server.scheduler import Scheduler, SchedulerConfig
from server.slot_chunks import SlotPool, execute_slots
from server.update import Updater

VOCAB = 50
EOS = 0


def letters(ids) -> str:
    """A toy detokenizer: token i is the letter chr(65 + i % 26)."""
    return "".join(chr(65 + i % 26) for i in ids)


def token_cache(max_rows: int = 32, max_length: int = 256) -> SlotCache:
    """A host-memory slot cache whose key buffer holds one number per position: a token id."""
    return SlotCache(num_layers=1, heads=1, head_dim=1, max_rows=max_rows, max_length=max_length)


def one_hot(tokens) -> np.ndarray:
    """Logits `[n, VOCAB]` whose argmax is each row's token."""
    logits = np.zeros((len(tokens), VOCAB), dtype=np.float32)
    logits[np.arange(len(tokens)), tokens] = 10.0
    return logits


def echo_logits(last: np.ndarray) -> np.ndarray:
    """Next token = (last token + 1) % VOCAB, never EOS."""
    nxt = (np.asarray(last) + 1) % VOCAB
    return one_hot(np.where(nxt == EOS, 1, nxt))


class TokenEchoRunner:
    """Next token = (last token + 1) % VOCAB, never EOS. Its "KV cache" holds token ids."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def new_cache(self, max_rows: int) -> SlotCache:
        return token_cache(max_rows)

    def prefill(self, cache: SlotCache, prompts: list[list[int]]) -> np.ndarray:
        start = cache.size
        cache.reserve(start + len(prompts), max(len(p) for p in prompts))
        key = cache.layers[0][0]  # [rows, 1, capacity, 1]
        for row, prompt in enumerate(prompts, start):
            key[row, 0, : len(prompt), 0] = prompt
        cache.append([len(p) for p in prompts])
        self.calls.append(("prefill", len(prompts)))
        return echo_logits(np.array([p[-1] for p in prompts]))

    def decode_step(self, cache: SlotCache, tokens: np.ndarray) -> np.ndarray:
        n = len(tokens)
        assert n <= cache.size
        cache.reserve(n, int(cache.lengths[:n].max()) + 1)
        cache.layers[0][0][np.arange(n), 0, cache.lengths[:n], 0] = tokens
        cache.advance(n)
        self.calls.append(("decode", n))
        return echo_logits(tokens)


def make_request(rid: str, prompt: list[int], sink: dict, **params) -> Request:
    """A request whose events land in `sink[rid]`; max_new_tokens 5 unless given."""
    events: list[StreamEvent] = sink.setdefault(rid, [])
    return Request(
        request_id=rid,
        prompt_ids=prompt,
        params=SamplingParams(**{"max_new_tokens": 5, **params}),
        emit=events.append,
    )


def running(request: Request) -> Request:
    """The request as the scheduler hands it over once admitted."""
    request.status, request.scheduled_at = RequestStatus.RUNNING, request.arrival
    return request


def make_updater(eos: int = EOS, max_context: int = 64) -> Updater:
    return Updater(eos_token_id=eos, max_context=max_context, detokenize=letters)


def scheduler_config(chunked_prefill: bool = True, **changes) -> SchedulerConfig:
    """The server's step and queue limits (ServeConfig's defaults), with a test's changes."""
    config = ServeConfig(model=Path(".")).scheduler_config(chunked_prefill)
    return replace(config, **changes)


def make_engine(runner=None, eos: int = EOS, max_context: int = 64, **scheduler_options) -> Engine:
    """The fused graph's engine (the one scheduler with whole prompts, the slot cache) and
    the real update stage over a fake runner (TokenEchoRunner)."""
    runner = runner or TokenEchoRunner()
    config = scheduler_config(chunked_prefill=False, **scheduler_options)
    rows = config.max_batch_size
    pool = SlotPool(lambda: runner.new_cache(rows), rows, block_size=16)
    scheduler = Scheduler(config, pool)
    return Engine(runner, scheduler, make_updater(eos, max_context), execute=execute_slots)


def check_cache(scheduler: Scheduler) -> None:
    """Row i of the slot cache is owned by a running sequence and holds its prompt + outputs
    except the last (not yet fed); every running sequence that decoded owns a row."""
    pool = scheduler.cache
    cache = pool.slots
    assert cache.size == len(pool.rows)
    key = cache.layers[0][0]
    running = {id(r) for r in scheduler.running}
    for row, request in enumerate(pool.rows):
        if id(request) not in running:
            continue  # finished this step: its row leaves at the next one
        expected = request.prompt_ids + request.output_ids[:-1]
        assert cache.lengths[row] == len(expected)
        assert key[row, 0, : len(expected), 0].astype(int).tolist() == expected
    assert running <= {id(r) for r in pool.rows}


def run_to_end(engine: Engine, max_steps: int = 100) -> None:
    """Step until no work is left, checking the cache's rows after every step."""
    for _ in range(max_steps):
        if not engine.scheduler.has_work():
            return
        engine.step()
        check_cache(engine.scheduler)
    raise AssertionError("engine did not finish")


def texts(events: list[StreamEvent]) -> list[int]:
    """Every token id the events carried, in order."""
    return [t for e in events for t in e.token_ids]


def break_sampling_for_seed(monkeypatch, seed: int) -> None:
    """The update stage's sampler raises for any batch holding a request with this seed."""
    real = server.update.select_tokens

    def picky(logits, params, seen, uniforms):
        if any(p.seed == seed for p in params):
            raise FloatingPointError("sampler blew up")
        return real(logits, params, seen, uniforms)

    monkeypatch.setattr(server.update, "select_tokens", picky)


class TokenPagedCache:
    """A paged cache whose one "layer" holds a token id per position `[blocks, block_size]`,
    so a test can check that every sequence's blocks hold exactly its own tokens."""

    def __init__(self, num_blocks: int = 64, block_size: int = 4, prefix_caching: bool = True):
        self.prefix_caching = prefix_caching
        self.blocks = BlockManager(num_blocks, block_size, prefix_caching)
        self.tokens = np.full((num_blocks, block_size), -1, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return self.blocks.used_blocks * self.tokens[0].nbytes

    def reset(self) -> None:
        size = self.blocks.block_size
        self.blocks = BlockManager(self.blocks.num_blocks, size, self.prefix_caching)
        self.tokens[:] = -1


class TokenEchoPagedRunner:
    """The paged runner's fake: writes each chunk's token ids into its blocks (never below
    the sequence's computed tokens, never into another's block) and answers (last + 1) % VOCAB
    for the chunks that sample (for a scoring chunk, at each of its positions)."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []  # (tokens, sampled) per call

    def run_chunks(self, cache: TokenPagedCache, chunks) -> np.ndarray:
        size = cache.blocks.block_size
        last = []
        for chunk in chunks:
            request, table = chunk.request, chunk.request.blocks
            assert chunk.start == request.computed, "a chunk starts where the cache ends"
            assert chunk.start >= table.cached_tokens, "shared prefix blocks are never written"
            ids = request.token_ids[chunk.start : chunk.start + chunk.length]
            for position, token in enumerate(ids, chunk.start):
                cache.tokens[table.blocks[position // size], position % size] = token
            if chunk.score:  # every position's logits (server/paged_runner.py `forward`)
                last.extend(ids)
            elif chunk.sample:
                last.append(ids[-1])
        self.steps.append((sum(c.length for c in chunks), len(last)))
        return echo_logits(np.array(last, dtype=np.int64))


def paged_engine(
    cache: TokenPagedCache | None = None, eos: int = EOS, max_context: int = 64, **options
) -> Engine:
    """The paged scheduler and the real update stage over TokenEchoPagedRunner."""
    config = replace(ServeConfig(model=Path(".")).scheduler_config(), **options)
    scheduler = Scheduler(config, cache or TokenPagedCache())
    updater = make_updater(eos, max_context)
    return Engine(TokenEchoPagedRunner(), scheduler, updater, execute=execute_chunks)


def check_blocks(scheduler: Scheduler) -> None:
    """Every running sequence's blocks hold its computed tokens, in order."""
    cache = scheduler.cache
    size = cache.blocks.block_size
    for request in scheduler.running:
        held = [
            int(cache.tokens[request.blocks.blocks[p // size], p % size])
            for p in range(request.computed)
        ]
        assert held == request.token_ids[: request.computed], request.request_id


def run_paged_to_end(engine: Engine, max_steps: int = 500) -> None:
    """Step until no work is left, checking the blocks after every step."""
    for _ in range(max_steps):
        if not engine.scheduler.has_work():
            return
        engine.step()
        check_blocks(engine.scheduler)
    raise AssertionError("engine did not finish")


def artifact_engine(artifact: Path, **options):
    """The server's engine over a real artifact, in process (no doors, not started): its
    scheduler, cache and plan execution as `kvserve-serve` picks them; (engine, model)."""
    from server.app import engine_parts, load_model
    from server.text_stream import detokenizer

    config = ServeConfig(model=artifact, **options)
    model = load_model(config)
    scheduler, run_plan = engine_parts(config, model.runner)
    manifest = model.manifest
    updater = Updater(
        manifest.eos_token_id, manifest.architecture.max_positions, detokenizer(model.tokenizer)
    )
    return Engine(model.runner, scheduler, updater, execute=run_plan), model
