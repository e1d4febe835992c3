"""kernels.paged_attention against kernels.reference (the spec), on every kernel path: the
AVX-512 one (where the CPU has it) and the portable one, fp32 and int8 caches, block sizes
16 and 32; decode rows and prefill chunks in one call, chunks that start mid-block and cross
blocks, context 0, ragged lengths; where the writes land; argument checks; threads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernels
from kernels import reference

PATHS = ["portable", "avx512", "avx512vnni"]


@pytest.fixture(params=PATHS)
def isa(request):
    if request.param not in kernels.supported():
        pytest.skip(f"this CPU cannot run the {request.param} path")
    kernels.set_isa(request.param)
    yield request.param
    kernels.set_isa("auto")


@dataclass(frozen=True)
class Case:
    """One call's arguments; the pools hold random 'cached' data before the call."""

    qkv: np.ndarray  # [T, 3*H*D]
    key_pool: np.ndarray  # [num_blocks, H, B, D]
    value_pool: np.ndarray
    block_tables: np.ndarray  # [S, max_blocks]
    query_starts: np.ndarray  # [S+1]
    context_lens: np.ndarray  # [S]
    key_scale: np.ndarray | None  # [H*D]
    value_scale: np.ndarray | None

    @property
    def int8(self) -> bool:
        return self.key_pool.dtype == np.int8

    def args(self, out: np.ndarray, pools: tuple[np.ndarray, np.ndarray]) -> tuple:
        return (
            self.qkv,
            *pools,
            self.block_tables,
            self.query_starts,
            self.context_lens,
            out,
            self.key_scale,
            self.value_scale,
        )


def make_case(
    seed: int,
    contexts: list[int],
    chunks: list[int],
    heads: int = 2,
    dim: int = 64,
    block: int = 16,
    dtype=np.float32,
    spare_blocks: int = 3,
) -> Case:
    rng = np.random.default_rng(seed)
    needed = [-(-(c + n) // block) if n else 0 for c, n in zip(contexts, chunks, strict=True)]
    num_blocks = sum(needed) + spare_blocks
    ids = rng.permutation(num_blocks).astype(np.int32)
    # unused tail entries are arbitrary: garbage the kernel must never follow
    tables = np.full((len(chunks), max(needed, default=0) + 2), 2**31 - 1, np.int32)
    at = 0
    for row, count in enumerate(needed):
        tables[row, :count] = ids[at : at + count]
        at += count
    tables[:, -1] = -5
    shape = (num_blocks, heads, block, dim)
    hidden = heads * dim
    if dtype == np.int8:
        pools = [rng.integers(-127, 128, shape, dtype=np.int8) for _ in range(2)]
        scales = [rng.uniform(0.01, 0.05, hidden).astype(np.float32) for _ in range(2)]
        qkv = rng.standard_normal((sum(chunks), 3 * hidden)).astype(np.float32) * 2
    else:
        pools = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
        scales = [None, None]
        qkv = rng.standard_normal((sum(chunks), 3 * hidden)).astype(np.float32)
    return Case(
        qkv=qkv,
        key_pool=pools[0],
        value_pool=pools[1],
        block_tables=tables,
        query_starts=np.concatenate([[0], np.cumsum(chunks)]).astype(np.int32),
        context_lens=np.array(contexts, np.int32),
        key_scale=scales[0],
        value_scale=scales[1],
    )


def run_kernel(case: Case, threads: int = 1):
    pools = (case.key_pool.copy(), case.value_pool.copy())
    out = np.full((case.qkv.shape[0], case.qkv.shape[1] // 3), np.nan, np.float32)
    kernels.paged_attention(*case.args(out, pools), threads=threads)
    return out, pools


def run_reference(case: Case):
    pools = (case.key_pool.copy(), case.value_pool.copy())
    out = np.full((case.qkv.shape[0], case.qkv.shape[1] // 3), np.nan, np.float32)
    reference.paged_attention(*case.args(out, pools))
    return out, pools


def tolerance(case: Case, isa: str) -> float:
    """Absolute error bound on out. fp32: float rounding. int8 on AVX-512: q is rounded to
    16 bits for the integer key products (relative 2^-15 of the scores), and with VNNI the
    weights to 16 bits for the value products."""
    if not case.int8:
        return 1e-5
    values = np.abs(case.value_pool).max() * case.value_scale.max()
    return (1e-5 if isa == "portable" else 1e-3) * max(float(values), 1.0)


def assert_matches_reference(case: Case, isa: str, threads: int = 1) -> None:
    out, pools = run_kernel(case, threads)
    want_out, want_pools = run_reference(case)
    assert np.array_equal(pools[0], want_pools[0]), "key pool differs from the reference"
    assert np.array_equal(pools[1], want_pools[1]), "value pool differs from the reference"
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, want_out, rtol=0, atol=tolerance(case, isa))


# rows: a decode row, a prefill chunk from 0, a chunk starting mid-block across two block
# boundaries, a decode row at context 0, a sequence with no tokens this call, a long decode
MIXED_CONTEXTS = [37, 0, 21, 0, 50, 70]
MIXED_CHUNKS = [1, 40, 45, 1, 0, 1]


@pytest.mark.parametrize("dtype", [np.float32, np.int8], ids=["fp32", "int8"])
@pytest.mark.parametrize("block", [16, 32])
def test_decode_rows_and_prefill_chunks_in_one_call_match_the_reference(isa, dtype, block):
    case = make_case(1, MIXED_CONTEXTS, MIXED_CHUNKS, block=block, dtype=dtype)
    assert_matches_reference(case, isa)


@pytest.mark.parametrize("dtype", [np.float32, np.int8], ids=["fp32", "int8"])
@pytest.mark.parametrize("dim", [16, 32, 128, 24])  # 24: not a multiple of 16 (portable)
def test_other_head_dims_match_the_reference(isa, dtype, dim):
    case = make_case(2, [5, 0, 19], [1, 9, 30], heads=3, dim=dim, dtype=dtype)
    assert_matches_reference(case, isa)


@pytest.mark.parametrize("dtype", [np.float32, np.int8], ids=["fp32", "int8"])
def test_writes_land_in_the_slots_the_block_table_names(isa, dtype):
    case = make_case(3, MIXED_CONTEXTS, MIXED_CHUNKS, heads=3, dtype=dtype)
    _, (key_pool, value_pool) = run_kernel(case)
    heads, dim = case.key_pool.shape[1], case.key_pool.shape[3]
    hidden = heads * dim
    for s, context in enumerate(case.context_lens):
        first, last = case.query_starts[s], case.query_starts[s + 1]
        if first == last:
            continue  # no tokens: its table row is never read
        length = context + last - first
        table = case.block_tables[s]
        for kind, pool, scale, column in [
            ("key", key_pool, case.key_scale, 1),
            ("value", value_pool, case.value_scale, 2),
        ]:
            new = case.qkv[first:last, column * hidden : (column + 1) * hidden]
            new = new.reshape(-1, heads, dim).transpose(1, 0, 2)  # [H, n, D]
            if case.int8:
                new = reference.quantize(new, scale.reshape(heads, 1, dim)) * scale.reshape(
                    heads, 1, dim
                )
            got = reference.gather(pool, table, length, kind, scale)
            before = reference.gather(getattr(case, f"{kind}_pool"), table, length, kind, scale)
            assert np.array_equal(got[:, context:], new), f"{kind}s of sequence {s}"
            assert np.array_equal(got[:, :context], before[:, :context]), "cached positions moved"
    touched = {int(b) for s, row in enumerate(case.block_tables) for b in row[: needed(case, s)]}
    untouched = sorted(set(range(case.key_pool.shape[0])) - touched)
    assert untouched, "the case keeps spare blocks"
    assert np.array_equal(key_pool[untouched], case.key_pool[untouched])
    assert np.array_equal(value_pool[untouched], case.value_pool[untouched])


def needed(case: Case, s: int) -> int:
    tokens = case.query_starts[s + 1] - case.query_starts[s]
    block = case.key_pool.shape[2]
    return -(-(case.context_lens[s] + tokens) // block) if tokens else 0


def test_a_token_at_context_0_gets_its_own_value(isa):
    case = make_case(4, [0, 0], [1, 1], heads=3)
    out, _ = run_kernel(case)
    hidden = out.shape[1]
    np.testing.assert_allclose(out, case.qkv[:, 2 * hidden :], rtol=1e-6, atol=1e-6)


def test_results_do_not_depend_on_threads_or_company(isa):
    """Each (sequence, head, query group) is one thread's work, computed the same way
    whatever else is in the call: bit for bit."""
    case = make_case(5, [37, 0, 21, 130], [1, 70, 45, 1], heads=4)
    alone = make_case(5, [37, 0, 21, 130], [1, 70, 45, 1], heads=4)
    one, _ = run_kernel(case, threads=1)
    two, _ = run_kernel(case, threads=2)
    many, _ = run_kernel(case, threads=7)
    assert np.array_equal(one, two) and np.array_equal(one, many)
    rows = slice(case.query_starts[2], case.query_starts[3])  # sequence 2 alone
    solo = replace(
        alone,
        qkv=alone.qkv[rows].copy(),
        block_tables=alone.block_tables[2:3].copy(),
        query_starts=np.array([0, rows.stop - rows.start], np.int32),
        context_lens=alone.context_lens[2:3].copy(),
    )
    by_itself, _ = run_kernel(solo, threads=2)
    assert np.array_equal(by_itself, one[rows])


def test_calls_from_two_python_threads_at_once_are_both_right(isa):
    case = make_case(6, [37, 0, 90], [1, 40, 1], heads=2)
    want, _ = run_reference(case)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                results.append(run_kernel(case, threads=2)[0])
        except BaseException as error:  # surfaced below
            errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors and len(results) == 40
    for out in results:
        np.testing.assert_allclose(out, want, rtol=0, atol=tolerance(case, isa))


def test_pool_threads_sleep_between_calls():
    """The kernel's threads wait on a condition variable once a call returns: they must not
    take CPU from ONNX Runtime's threads on the same cores."""
    case = make_case(7, [300] * 8, [1] * 8, heads=4)
    for _ in range(3):
        run_kernel(case, threads=4)
    start = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - start < 0.1  # 3 spinning threads would burn ~0.9 s


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    heads=st.integers(1, 3),
    dim=st.sampled_from([16, 32, 64, 8]),
    block=st.sampled_from([16, 32, 8]),  # 8: not a multiple of 16 (portable)
    int8=st.booleans(),
    sequences=st.integers(1, 4),
)
def test_random_shapes_match_the_reference(isa, data, heads, dim, block, int8, sequences):
    contexts = data.draw(st.lists(st.integers(0, 150), min_size=sequences, max_size=sequences))
    chunks = data.draw(st.lists(st.integers(0, 70), min_size=sequences, max_size=sequences))
    seed = data.draw(st.integers(0, 2**16))
    dtype = np.int8 if int8 else np.float32
    case = make_case(seed, contexts, chunks, heads=heads, dim=dim, block=block, dtype=dtype)
    assert_matches_reference(case, isa, threads=data.draw(st.integers(1, 3)))


def test_an_empty_call_writes_nothing():
    case = make_case(7, [5, 3], [0, 0])
    out, pools = run_kernel(case)
    assert out.shape == (0, case.qkv.shape[1] // 3)
    assert np.array_equal(pools[0], case.key_pool) and np.array_equal(pools[1], case.value_pool)


def bad(case: Case, **changes) -> dict:
    args = dict(
        qkv=case.qkv,
        key_pool=case.key_pool.copy(),
        value_pool=case.value_pool.copy(),
        block_tables=case.block_tables,
        query_starts=case.query_starts,
        context_lens=case.context_lens,
        out=np.zeros((case.qkv.shape[0], case.qkv.shape[1] // 3), np.float32),
        key_scale=case.key_scale,
        value_scale=case.value_scale,
    )
    args.update(changes)
    return args


FP32 = make_case(8, [20, 0], [1, 18])
INT8 = make_case(8, [20, 0], [1, 18], dtype=np.int8)
T = FP32.qkv.shape[0]
HIDDEN = FP32.qkv.shape[1] // 3


def table_with(case: Case, row: int, column: int, value: int) -> np.ndarray:
    tables = case.block_tables.copy()
    tables[row, column] = value
    return tables


@pytest.mark.parametrize(
    ("case", "changes", "message"),
    [
        (FP32, {"qkv": FP32.qkv.astype(np.float64)}, "qkv must be float32"),
        (FP32, {"qkv": FP32.qkv[:, :-3].copy()}, r"qkv must be \[tokens, 384\]"),
        (FP32, {"qkv": np.asfortranarray(FP32.qkv)}, "qkv must be C-contiguous"),
        (FP32, {"qkv": FP32.qkv.tolist()}, "qkv must be a numpy array"),
        (FP32, {"key_pool": FP32.key_pool[:, :, :, ::2]}, "C-contiguous"),
        (FP32, {"value_pool": FP32.value_pool[:-1].copy()}, "value_pool must have key_pool"),
        (FP32, {"value_pool": INT8.value_pool.copy()}, "share a dtype"),
        (
            FP32,
            {
                "key_pool": FP32.key_pool.astype(np.float16),
                "value_pool": FP32.key_pool.astype(np.float16),
            },
            "float32 or int8",
        ),
        (FP32, {"out": np.zeros((T, HIDDEN + 1), np.float32)}, "out must be"),
        (FP32, {"out": np.zeros((T, HIDDEN), np.float64)}, "out must be float32"),
        (FP32, {"block_tables": FP32.block_tables.astype(np.int64)}, "block_tables must be int32"),
        (FP32, {"block_tables": table_with(FP32, 0, 0, 10**6)}, "outside the pool"),
        (FP32, {"block_tables": table_with(FP32, 1, 1, -1)}, "outside the pool"),
        (FP32, {"block_tables": FP32.block_tables[:, :1].copy()}, "need 2"),
        (FP32, {"block_tables": FP32.block_tables[:1].copy()}, "a row per sequence"),
        (FP32, {"block_tables": table_with(FP32, 1, 0, int(FP32.block_tables[0, 1]))}, "slot"),
        (FP32, {"query_starts": np.array([0, 1, T + 1], np.int32)}, "token count"),
        (FP32, {"query_starts": np.array([1, 1, T], np.int32)}, r"query_starts\[0\]"),
        (FP32, {"query_starts": np.array([0, T, T, T], np.int32)}, "entries"),
        (FP32, {"query_starts": np.array([0, T, T - 1], np.int32)}, "token count|decrease"),
        (FP32, {"context_lens": np.array([20, -1], np.int32)}, "negative"),
        (FP32, {"key_scale": np.ones(HIDDEN, np.float32)}, "int8 pools only"),
        (INT8, {"key_scale": None}, "key_scale is required"),
        (INT8, {"value_scale": np.ones(HIDDEN - 1, np.float32)}, "value_scale must be"),
        (INT8, {"value_scale": np.zeros(HIDDEN, np.float32)}, "positive and finite"),
        (INT8, {"key_scale": np.full(HIDDEN, np.nan, np.float32)}, "positive and finite"),
    ],
)
def test_bad_arguments_raise_value_error(case, changes, message):
    with pytest.raises(ValueError, match=message):
        kernels.paged_attention(**bad(case, **changes))


def test_shared_and_read_only_buffers_are_refused():
    args = bad(FP32)
    with pytest.raises(ValueError, match="share memory"):
        kernels.paged_attention(**{**args, "value_pool": args["key_pool"]})
    frozen = args["key_pool"].copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="key_pool must be writeable"):
        kernels.paged_attention(**{**args, "key_pool": frozen})
    with pytest.raises(ValueError, match="threads must be"):
        kernels.paged_attention(**args, threads=0)
    odd = make_case(9, [0], [3], dim=7, dtype=np.int8)
    with pytest.raises(ValueError, match="even head_dim"):
        kernels.paged_attention(**bad(odd))


def test_the_path_can_be_forced_and_is_reported():
    kernels.set_isa("portable")
    try:
        assert kernels.isa() == "portable"
    finally:
        kernels.set_isa("auto")
    assert kernels.isa() == kernels.supported()[-1]
    with pytest.raises(ValueError, match="isa must be"):
        kernels.set_isa("sse9")
    for name in set(PATHS) - set(kernels.supported()):
        with pytest.raises(ValueError, match="cannot run"):
            kernels.set_isa(name)
