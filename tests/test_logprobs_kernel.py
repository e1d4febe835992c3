"""kernels.token_logprobs against kernels.reference.token_logprobs (the spec: a float64
log-softmax, top ids by logit descending, ties to the lower id), on every kernel path (the
AVX-512 one where the CPU has it, and the portable one): ragged vocabularies (not a multiple
of 16, under 16), ties, huge and tiny magnitudes, -inf entries, NaN / +inf rows, an
ascending row (every entry a top-K candidate), thread counts, random shapes, bad arguments.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernels
from kernels import reference

PATHS = ["portable", "avx512"]
GPT2_VOCAB = 50257
LOGPROB_ATOL = 2e-6  # the kernel's summation and exp error, absolute on a logprob
FLOAT32_RTOL = 2.0**-23  # both sides round to float32 once: one ulp apart at most


@pytest.fixture(params=PATHS)
def path(request):
    if request.param not in kernels.supported():
        pytest.skip(f"this CPU cannot run the {request.param} path")
    kernels.set_isa(request.param)
    assert kernels.logprobs_isa() == request.param
    yield request.param
    kernels.set_isa("auto")


def assert_matches_reference(
    logits: np.ndarray, tokens: np.ndarray, top: int, threads: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    got = kernels.token_logprobs(logits, tokens, top, threads=threads)
    want = reference.token_logprobs(logits, tokens, top)
    n = logits.shape[0]
    for array, dtype, shape in zip(
        got, (np.float32, np.int64, np.float32), ((n,), (n, top), (n, top)), strict=True
    ):
        assert array.dtype == dtype and array.shape == shape
        assert array.flags.c_contiguous and array.flags.writeable
    np.testing.assert_array_equal(got[1], want[1], err_msg="top ids")
    for name, g, w in (("logprob", got[0], want[0]), ("top logprobs", got[2], want[2])):
        np.testing.assert_allclose(
            g, w, rtol=FLOAT32_RTOL, atol=LOGPROB_ATOL, equal_nan=True, err_msg=name
        )
    return got


def normal_logits(seed: int, n: int, vocab: int, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, vocab)) * scale).astype(np.float32)


def some_tokens(seed: int, n: int, vocab: int) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, vocab, n, dtype=np.int64)


@pytest.mark.parametrize("top", [0, 1, 5, 20, 64])
def test_a_gpt2_sized_batch_matches_the_reference(path, top):
    logits = normal_logits(0, 8, GPT2_VOCAB)
    assert_matches_reference(logits, some_tokens(0, 8, GPT2_VOCAB), top)


@pytest.mark.parametrize("vocab", [1, 2, 7, 15, 16, 17, 31, 33, 63, 64, 65, 127, 1000, 1009])
def test_ragged_and_tiny_vocabularies(path, vocab):
    logits = normal_logits(vocab, 5, vocab)
    tokens = some_tokens(vocab, 5, vocab)
    for top in sorted({0, 1, min(5, vocab), min(64, vocab)}):
        assert_matches_reference(logits, tokens, top)


def test_the_token_logprob_is_its_top_logprob_when_it_is_on_the_list(path):
    logits = normal_logits(1, 6, 3000)
    tokens = logits.argmax(axis=1).astype(np.int64)  # each row's best token
    logprob, ids, values = assert_matches_reference(logits, tokens, 3)
    assert np.array_equal(ids[:, 0], tokens)
    assert np.array_equal(values[:, 0], logprob)
    assert np.all(np.diff(values, axis=1) <= 0)


def test_probabilities_sum_to_one(path):
    vocab = 1000
    logits = normal_logits(2, 3, vocab, scale=5.0)
    for row in range(3):
        tokens = np.arange(vocab, dtype=np.int64)
        rows = np.repeat(logits[row : row + 1], vocab, axis=0)  # every token of one row
        logprob, _, _ = kernels.token_logprobs(rows, tokens, 0)
        assert abs(np.exp(logprob.astype(np.float64)).sum() - 1.0) < 1e-5


def test_ties_go_to_the_lower_id(path):
    logits = np.zeros((4, 100), np.float32)
    logits[0, [70, 3, 50, 99]] = 2.0  # ties above the rest
    logits[1] = 1.0  # all equal: ids 0..top-1
    logits[2, ::7] = 5.0  # 15 ties across vector boundaries, top 20 takes them all and 5 more
    logits[3] = np.repeat(np.arange(10, dtype=np.float32), 10)[::-1]  # runs of 10 equal values
    tokens = np.array([3, 1, 14, 99], np.int64)
    _, ids, _ = assert_matches_reference(logits, tokens, 20)
    assert ids[0, :4].tolist() == [3, 50, 70, 99]
    assert ids[1].tolist() == list(range(20))
    assert ids[2, :15].tolist() == list(range(0, 100, 7))
    assert ids[2, 15:].tolist() == [1, 2, 3, 4, 5]
    assert ids[3].tolist() == list(range(20))


def test_signed_zeros_tie(path):
    logits = np.array([[-0.0, 0.0, -0.0, -1.0] * 5], np.float32)
    _, ids, _ = assert_matches_reference(logits, np.array([0], np.int64), 4)
    assert ids[0].tolist() == [0, 1, 2, 4]


def test_ties_from_quantised_logits_at_vocab_size(path):
    rng = np.random.default_rng(3)
    logits = np.round(rng.standard_normal((6, GPT2_VOCAB)) * 2).astype(np.float32)  # ~15 levels
    assert_matches_reference(logits, some_tokens(3, 6, GPT2_VOCAB), 64)


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1.0, 100.0, 1e4, 1e30])
def test_magnitudes(path, scale):
    assert_matches_reference(normal_logits(4, 5, 5003, scale), some_tokens(4, 5, 5003), 10)


def test_large_offsets_and_extremes(path):
    logits = normal_logits(5, 7, 3001, scale=2.0)
    logits[0] += 1e6  # huge common offset, small differences
    logits[1] -= 3e7
    logits[2, :] = -3e38
    logits[2, 17] = 3e38  # 3e38 - (-3e38) overflows float32: those logprobs are -inf
    logits[3, ::3] = 1e-40  # denormals
    logits[4, :] = np.float32(np.finfo(np.float32).max)  # all at the top of the range
    logits[5, 100:] = logits[5, 100:] - 95.0  # many terms just below exp's floor
    logits[6, 1:] = -88.0  # every term but one near e^-88
    logits[6, 0] = 0.0
    tokens = np.array([1, 2, 0, 17, 3, 150, 5], np.int64)
    logprob, _, top_lp = assert_matches_reference(logits, tokens, 8)
    assert logprob[2] == -np.inf and top_lp[2, 0] == 0.0
    assert np.isfinite(logprob[[0, 1, 3, 4, 5, 6]]).all()


def test_minus_infinity_entries_contribute_nothing(path):
    vocab = 1000
    logits = normal_logits(6, 4, vocab)
    masked = logits.copy()
    masked[:, vocab // 2 :] = -np.inf  # a top-k/top-p style mask
    masked[1, :] = -np.inf
    masked[1, [5, 900]] = [1.0, 2.0]  # only 2 finite entries, top 5
    masked[2, ::2] = -np.inf
    tokens = np.array([3, 5, 1, 999], np.int64)
    logprob, ids, values = assert_matches_reference(masked, tokens, 5)
    # the finite half alone is a distribution of its own
    half, _, _ = kernels.token_logprobs(
        np.ascontiguousarray(logits[[0], : vocab // 2]), tokens[:1], 0
    )
    assert abs(float(half[0]) - float(logprob[0])) <= 2e-6
    assert logprob[3] == -np.inf
    assert ids[1].tolist() == [900, 5, 0, 1, 2]  # then the -inf ones, by id
    assert np.isneginf(values[1, 2:]).all()


def test_nan_and_plus_inf_rows_are_nan_throughout(path):
    logits = normal_logits(7, 5, 300)
    logits[0, 123] = np.nan
    logits[1, 299] = np.inf  # in the masked tail of the last vector
    logits[2, :] = -np.inf
    logits[3, 0] = np.nan  # among the first `top` entries (the list's initial fill)
    tokens = np.array([1, 2, 3, 4, 5], np.int64)
    logprob, ids, values = assert_matches_reference(logits, tokens, 6)
    assert np.isnan(logprob[:4]).all() and np.isnan(values[:4]).all()
    assert (ids[:4] == np.arange(6)).all()
    assert np.isfinite(logprob[4]) and np.isfinite(values[4]).all()  # the clean row is intact


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_sorted_rows(path, order):
    """Ascending: every entry beats the current K-th one (the insertion's worst case)."""
    row = np.linspace(-20.0, 20.0, 20000, dtype=np.float32)
    logits = np.stack([row if order == "ascending" else row[::-1]] * 3)
    assert_matches_reference(np.ascontiguousarray(logits), np.array([0, 1, 19999]), 64)


def test_results_do_not_depend_on_threads(path):
    logits = normal_logits(8, 13, 7777)
    tokens = some_tokens(8, 13, 7777)
    one = kernels.token_logprobs(logits, tokens, 7, threads=1)
    for threads in (2, 3, 7, 13, 64):
        other = kernels.token_logprobs(logits, tokens, 7, threads=threads)
        for a, b in zip(one, other, strict=True):
            assert np.array_equal(a, b)
    alone = kernels.token_logprobs(logits[5:6], tokens[5:6], 7)  # a row's company is irrelevant
    for a, b in zip(one, alone, strict=True):
        assert np.array_equal(a[5:6], b)


def test_calls_from_two_python_threads_at_once_are_both_right(path):
    logits = normal_logits(9, 16, 20000)
    tokens = some_tokens(9, 16, 20000)
    want = kernels.token_logprobs(logits, tokens, 5)
    results, errors = [], []

    def work() -> None:
        try:
            for _ in range(10):
                results.append(kernels.token_logprobs(logits, tokens, 5, threads=2))
        except BaseException as error:  # surfaced below
            errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors and len(results) == 20
    for got in results:
        for a, b in zip(got, want, strict=True):
            assert np.array_equal(a, b)


def test_no_rows():
    logprob, ids, values = kernels.token_logprobs(
        np.zeros((0, 10), np.float32), np.zeros(0, np.int64), 3
    )
    assert logprob.shape == (0,) and ids.shape == (0, 3) and values.shape == (0, 3)


@st.composite
def problems(draw):
    rows = draw(st.integers(0, 40))
    # sparse over 1..70000: small vocabularies (tails, V < 16) as often as large ones
    vocab = draw(st.one_of(st.integers(1, 80), st.integers(81, 70000)))
    top = draw(st.integers(0, min(64, vocab)))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 4.0, 30.0, 1e4]))
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, vocab)) * scale
    if draw(st.booleans()):  # coarse levels: many exact ties
        logits = np.round(logits)
    logits = logits.astype(np.float32)
    if rows and draw(st.booleans()):  # -inf masks
        logits[rng.random((rows, vocab)) < draw(st.sampled_from([0.01, 0.5, 0.99]))] = -np.inf
    tokens = rng.integers(0, vocab, rows, dtype=np.int64)
    threads = draw(st.integers(1, 3))
    return logits, tokens, top, threads


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(problem=problems())
def test_random_shapes_match_the_reference(path, problem):
    logits, tokens, top, threads = problem
    assert_matches_reference(logits, tokens, top, threads)


LOGITS = np.zeros((3, 20), np.float32)
TOKENS = np.array([0, 1, 2], np.int64)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((LOGITS.astype(np.float64), TOKENS, 2), "logits must be float32"),
        ((LOGITS.astype(np.float16), TOKENS, 2), "logits must be float32"),
        ((LOGITS.tolist(), TOKENS, 2), "logits must be a numpy array"),
        ((LOGITS[0], TOKENS, 2), r"logits must be \[rows, vocab\]"),
        ((LOGITS[None], TOKENS, 2), r"logits must be \[rows, vocab\]"),
        ((np.asfortranarray(np.zeros((3, 20), np.float32)), TOKENS, 2), "C-contiguous"),
        ((np.zeros((3, 40), np.float32)[:, ::2], TOKENS, 2), "C-contiguous"),
        ((np.zeros((3, 0), np.float32), TOKENS, 0), "at least one column"),
        ((LOGITS, TOKENS.astype(np.int32), 2), "tokens must be int64"),
        ((LOGITS, TOKENS[:2], 2), r"tokens must be \[3\]"),
        ((LOGITS, TOKENS[:, None], 2), r"tokens must be \[rows\]"),
        ((LOGITS, np.array([0, -1, 2]), 2), r"tokens\[1\] = -1 is outside"),
        ((LOGITS, np.array([0, 1, 20]), 2), r"tokens\[2\] = 20 is outside the vocabulary 0..19"),
        ((LOGITS, TOKENS, -1), r"top must be in 0..20"),
        ((LOGITS, TOKENS, 21), r"top must be in 0..20"),
        ((np.zeros((3, 100), np.float32), TOKENS, 65), r"top must be in 0..64"),
        ((LOGITS, TOKENS, 2.0), "top must be an int"),
        ((LOGITS, TOKENS, True), "top must be an int"),
        ((LOGITS, TOKENS, 2**70), "top must be in"),
    ],
)
def test_bad_arguments_raise_value_error(args, message):
    with pytest.raises(ValueError, match=message):
        kernels.token_logprobs(*args)


@pytest.mark.parametrize("threads", [0, -1, 65, 2.0])
def test_bad_thread_counts_raise_value_error(threads):
    with pytest.raises(ValueError, match="threads must be"):
        kernels.token_logprobs(LOGITS, TOKENS, 2, threads=threads)


def test_set_isa_covers_both_kernels():
    kernels.set_isa("portable")
    try:
        assert kernels.isa() == "portable" and kernels.logprobs_isa() == "portable"
    finally:
        kernels.set_isa("auto")
    assert kernels.logprobs_isa() == ("avx512" if "avx512" in kernels.supported() else "portable")
