"""Sampling functions on fixed logits."""

from __future__ import annotations

import numpy as np

from server.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    select_tokens,
    top_k_filter,
    top_p_filter,
)


def sampling(**knobs) -> SamplingParams:
    """Sampling knobs; the token budget means nothing to these functions."""
    return SamplingParams(max_new_tokens=1, **knobs)


LOGITS = np.log(np.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]], dtype=np.float32))


def test_top_k_keeps_k_best_per_row():
    out = top_k_filter(LOGITS, np.array([1, 2]))
    assert np.isfinite(out[0]).tolist() == [True, False, False, False]
    assert np.isfinite(out[1]).tolist() == [False, False, True, True]


def test_top_k_zero_is_off():
    assert top_k_filter(LOGITS, np.array([0, 0])) is LOGITS


def test_top_p_keeps_smallest_set_reaching_p():
    out = top_p_filter(LOGITS, np.array([0.7, 0.5], dtype=np.float32))
    assert np.isfinite(out[0]).tolist() == [True, True, False, False]  # 0.5 + 0.3 >= 0.7
    assert np.isfinite(out[1]).tolist() == [False, False, False, True]  # 0.5 alone reaches 0.5


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = np.array([[2.0, -2.0, 1.0]], dtype=np.float32)
    out = apply_repetition_penalty(logits, np.array([2.0]), [np.array([0, 1])])
    assert out.tolist() == [[1.0, -4.0, 1.0]]
    assert logits.tolist() == [[2.0, -2.0, 1.0]], "input must not change"


def test_greedy_rows_take_argmax_whatever_the_uniform():
    params = [sampling(), sampling()]
    none = [np.zeros(0, np.int64)] * 2
    for u in (0.0, 0.5, 0.999):
        tokens = select_tokens(LOGITS, params, none, np.array([u, u]))
        assert tokens.tolist() == [0, 3]


def test_sampling_follows_the_uniform_through_the_cdf():
    params = [sampling(temperature=1.0)] * 2
    none = [np.zeros(0, np.int64)] * 2
    assert select_tokens(LOGITS, params, none, np.array([0.1, 0.1])).tolist() == [0, 1]
    assert select_tokens(LOGITS, params, none, np.array([0.6, 0.6])).tolist() == [1, 3]
    assert select_tokens(LOGITS, params, none, np.array([0.97, 0.97])).tolist() == [3, 3]


def test_sampling_never_picks_a_filtered_token():
    params = [sampling(temperature=1.0, top_k=2), sampling(temperature=1.0, top_p=0.5)]
    none = [np.zeros(0, np.int64)] * 2
    rng = np.random.default_rng(0)
    for _ in range(200):
        tokens = select_tokens(LOGITS, params, none, rng.random(2))
        assert tokens[0] in (0, 1) and tokens[1] == 3


def test_mixed_batch_matches_rows_alone():
    params = [sampling(), sampling(temperature=0.8, top_k=3)]
    none = [np.zeros(0, np.int64)] * 2
    u = np.array([0.3, 0.42])
    both = select_tokens(LOGITS, params, none, u)
    alone = [
        select_tokens(LOGITS[i : i + 1], params[i : i + 1], none[:1], u[i : i + 1])[0]
        for i in range(2)
    ]
    assert both.tolist() == alone


def test_sampling_distribution_matches_probabilities():
    params = [sampling(temperature=1.0)]
    none = [np.zeros(0, np.int64)]
    rng = np.random.default_rng(1)
    counts = np.zeros(4)
    for _ in range(4000):
        counts[select_tokens(LOGITS[:1], params, none, rng.random(1))[0]] += 1
    assert np.allclose(counts / 4000, [0.5, 0.3, 0.15, 0.05], atol=0.03)
