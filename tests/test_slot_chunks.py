"""The fused graph (what the CUDA target serves; ONNX Runtime's CPU provider here) under the
one scheduler: real ONNX Runtime sessions, in process. Its greedy answers, with requests
joining while others decode and a prompt over the step budget, are the paged engine's (the
same checkpoint, kvserve's kernel), token for token."""

from __future__ import annotations

from server.engine import Engine
from server.request import Request
from server.sampling import SamplingParams
from server.slot_chunks import SlotPool
from tests.support.engine import artifact_engine

PROMPTS = {  # id: (prompt token ids, tokens to generate); the tiny model has 400 tokens
    "a": ([264, 390, 318, 257], 12),
    "b": ([40, 188, 284, 222, 262, 149, 11, 290, 340], 7),
    "c": (list(range(100, 160)), 9),  # over the step budget of 24: whole, beside the others
    "d": ([126, 318], 10),
}


def engine_for(artifact) -> Engine:
    return artifact_engine(artifact, kv_cache_memory=64 << 20, max_step_tokens=24)[0]


def answers(engine: Engine) -> dict[str, list[int]]:
    """Greedy tokens of PROMPTS, "a" first, the rest joining once it decodes."""
    out: dict[str, list[int]] = {}

    def submit(rid: str) -> None:
        prompt, n = PROMPTS[rid]
        params = SamplingParams(max_new_tokens=n, ignore_eos=True)
        sink = out.setdefault(rid, [])
        engine.submit(Request(rid, prompt, params, lambda e: sink.extend(e.token_ids)))

    submit("a")
    engine.step()
    engine.step()
    for rid in ("b", "c", "d"):
        submit(rid)
    for _ in range(200):
        if not engine.busy():
            break
        engine.step()
    return out


def test_the_fused_graph_answers_as_the_paged_engine_under_the_one_scheduler(
    tiny_artifact, tiny_fused_artifact
):
    fused = engine_for(tiny_fused_artifact)
    assert isinstance(fused.scheduler.cache, SlotPool)
    assert not fused.scheduler.config.chunked_prefill
    got = answers(fused)
    assert {rid: len(tokens) for rid, tokens in got.items()} == {
        rid: n for rid, (_, n) in PROMPTS.items()
    }
    assert got == answers(engine_for(tiny_artifact))
    assert fused.scheduler.cache.slots.size <= 1  # rows leave once their sequences finish
