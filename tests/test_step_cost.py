"""The step-cost model behind --itl-target-ms (server/step_cost.py) and the paged scheduler's
use of it: fits, the chunk a time allows, and which steps get a time cap."""

from __future__ import annotations

import numpy as np
import pytest

from server.step_cost import MIN_STEPS, StepClock, StepCostFit, StepCostModel, attended
from tests.support.engine import make_request, paged_engine, run_paged_to_end, texts

TRUE = StepCostFit(per_step_s=0.012, per_token_s=0.0003, per_pair_s=1.5e-6)


def observed(model: StepCostModel, steps: list[tuple[int, float]], noise: float = 0.0) -> None:
    rng = np.random.default_rng(0)
    for tokens, pairs in steps:
        seconds = TRUE.seconds(tokens, pairs) * (1 + noise * rng.standard_normal())
        model.observe(tokens, pairs, seconds)


def test_the_fit_recovers_the_step_times_it_saw():
    model = StepCostModel()
    rng = np.random.default_rng(1)
    tokens, pairs = rng.integers(1, 512, 60), rng.uniform(0, 9e4, 60)
    observed(model, [(int(t), float(p)) for t, p in zip(tokens, pairs, strict=True)], noise=0.01)
    fit = model.fit
    for tokens, pairs in [(64, 8000.0), (300, 40000.0), (512, 90000.0)]:
        assert fit.seconds(tokens, pairs) == pytest.approx(TRUE.seconds(tokens, pairs), rel=0.05)


def test_no_fit_before_enough_steps_and_no_negative_terms_from_steps_that_never_varied():
    model = StepCostModel()
    model.observe(512, 1e5, 0.2)
    assert model.fit is None and MIN_STEPS > 1
    for _ in range(MIN_STEPS):  # every step alike: only time per token is determined
        model.observe(512, 1e5, 0.2)
    fit = model.fit
    assert min(fit.per_step_s, fit.per_token_s, fit.per_pair_s) >= 0
    assert fit.seconds(512, 1e5) == pytest.approx(0.2)
    assert fit.seconds(64, 1e4) < 0.2  # a smaller step is predicted shorter, never free


@pytest.mark.parametrize("start", [0, 1, 15, 300, 900])
@pytest.mark.parametrize("seconds", [1e-5, 0.004, 0.05, 0.3])
def test_the_chunk_within_a_time_is_the_longest_that_fits(start: int, seconds: float):
    n = TRUE.chunk_within(start, seconds)

    def cost(k: int) -> float:
        return k * TRUE.per_token_s + attended(start, k) * TRUE.per_pair_s

    assert n >= 0 and cost(n) <= seconds + 1e-12 and cost(n + 1) > seconds


def test_a_time_cap_only_while_decoding_rows_wait_and_the_target_is_reachable():
    target, floor = 0.1, 16
    alone = StepClock(TRUE, target, floor)
    assert alone.prompt_chunk(0, 400) == 400  # nobody decoding: the token budget rules

    clock = StepClock(TRUE, target, floor)
    for position in range(30, 50):  # 20 decoding rows, short contexts: well under target/2
        clock.decode(position)
    decoding_s = TRUE.seconds(20, sum(attended(p, 1) for p in range(30, 50)))
    first = clock.prompt_chunk(0, 400)
    assert 0 < first < 400
    left = target - decoding_s - first * TRUE.per_token_s - attended(0, first) * TRUE.per_pair_s
    assert 0 <= left < TRUE.per_token_s + (first + 1) * TRUE.per_pair_s
    assert clock.prompt_chunk(0, 400) == 0  # the step is full

    slow = StepClock(TRUE, target, floor)
    for position in range(64):
        slow.decode(900 + position)  # a decoding part over half the target: not chased
    assert slow.prompt_chunk(0, 400) == 400


def test_prompts_get_the_floor_whatever_the_cap():
    clock = StepClock(TRUE, 0.03, floor_tokens=16)
    clock.decode(10)  # decoding ~12.3 ms of a 30 ms target
    # a chunk after 900 cached tokens costs ~1.65 ms a token: ~10 would fit, 16 run
    assert TRUE.chunk_within(900, 0.03 - TRUE.seconds(1, attended(10, 1))) < 16
    assert clock.prompt_chunk(900, 100) == 16
    assert clock.prompt_chunk(0, 100) == 0


def test_the_scheduler_cuts_prompt_chunks_beside_decoding_rows_and_outputs_stay_the_same():
    prompts = {"early": [1, 2, 3], "late": list(range(1, 41)), "later": list(range(2, 30))}

    def run(capped: bool) -> tuple[dict, list]:
        engine, sink = paged_engine(max_step_tokens=64, itl_target_s=0.1 if capped else 0), {}
        # a model where 30 tokens take ~the whole 100 ms target
        engine.scheduler.cost.fit = StepCostFit(0.0, 0.003, 0.0)
        engine.scheduler.cost.observe = lambda *step: None  # keep the fit a test chose
        engine.submit(make_request("early", prompts["early"], sink, max_new_tokens=12))
        engine.step()  # early decodes from now on
        for rid in ("late", "later"):
            engine.submit(make_request(rid, prompts[rid], sink, max_new_tokens=4))
        lengths = []
        scheduler = engine.scheduler
        original = scheduler.schedule

        def schedule(now):
            plan = original(now)
            lengths.append(sum(c.length for c in plan.chunks))
            return plan

        scheduler.schedule = schedule
        run_paged_to_end(engine)
        return {rid: texts(events) for rid, events in sink.items()}, lengths

    capped, capped_steps = run(capped=True)
    free, free_steps = run(capped=False)
    assert capped == free  # the same tokens, however the prompts were cut
    assert max(free_steps) > 34  # the budget alone runs a whole prompt beside the decoding row
    assert max(capped_steps) <= 34  # the cap: 1 decoding token + 33 prompt tokens (~100 ms)


def test_the_engine_teaches_the_model_its_step_times():
    engine, sink = paged_engine(), {}
    engine.submit(make_request("a", [1, 2, 3], sink, max_new_tokens=MIN_STEPS + 2))
    run_paged_to_end(engine)
    fit = engine.scheduler.cost.fit
    assert fit is not None and fit.seconds(1, 1) > 0
