"""What the graph cut at attention costs per step: the dense pieces of a paged-v1 export
called in turn (server/dense.py's DenseModel, a stand-in attention between them) against the
same dense math as one ONNX Runtime session.

For each artifact (fp32; int8 weights + int8 KV cache) of the GPT-2 124M shape (random
weights, GPT-2's 50257-token vocabulary) it builds, once, in --workdir:
- model.onnx: the fused serving graph (export/gqa_graph.py, the export's int8 recipe);
- dense.onnx: that graph with every GroupQueryAttention replaced by a copy of its q and
  the logits taken at `logit_index` rows: the dense math of a step as one session;
- pieces/: the graph cut at attention (export/cut.py), as `kvserve-export --attention
  kernel` writes it.
Then per step shape (decode steps of N one-token rows; a prefill of P prompts x L tokens)
it times one call of each way per round, alternating their order (overheads are medians
of the per-round differences, so load from other work on a shared machine mostly cancels):
- one: dense.onnx, one session, then the step's 12 attention calls;
- cut: the L+1 pieces (DenseModel), Python calling them in turn, attention between them;
the attention being a copy of q into the attention buffer (the cut alone) or kvserve's
kernel over a block pool (with the kernel's threads in the picture); ONNX Runtime's pools
spinning or not, one shared memory arena or one per session, through
IOBinding or session.run, and, in a second process, on ONNX Runtime's global (process-wide)
intra-op pool. With --fused it also profiles model.onnx itself (decode rows at --context)
for the step as it is today and its GroupQueryAttention share; with --memory, the resident
memory of each way of loading.

    python bench/cut_overhead.py --threads 2 --rounds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from artifact import Architecture, piece_files  # noqa: E402
from server.runner import RunnerConfig, session_options  # noqa: E402

HIDDEN = 768


@dataclass(frozen=True)
class Shape:
    name: str
    tokens: int  # T: the step's flattened tokens
    logit_rows: list[int]  # rows of T whose logits are taken
    positions: list[int]  # position of each token


def decode_shape(rows: int, context: int) -> Shape:
    return Shape(f"decode {rows}", rows, list(range(rows)), [context] * rows)


def prefill_shape(prompts: int, length: int) -> Shape:
    last = [(i + 1) * length - 1 for i in range(prompts)]
    return Shape(
        f"prefill {prompts}x{length}", prompts * length, last, list(range(length)) * prompts
    )


@dataclass
class Row:
    precision: str
    shape: str
    pool: str  # session | global
    spin: str  # off | run | on (server/dense.py SPINS)
    attention: str  # copy (the stand-in) | kernel (kernels.paged_attention)
    one_ms: float  # median wall ms per step: one dense session, then the attention calls
    cut_ms: float  # the pieces with the attention between them (IOBinding, DenseModel)
    overhead_ms: float  # median over rounds of (cut - one), each pair timed side by side
    one_min_ms: float  # fastest calls: the least disturbed by other work on the machine
    cut_min_ms: float
    cpu_overhead_ms: float  # median paired difference of the process's CPU time
    run_extra_ms: float  # session.run instead of IOBinding: median extra wall ms per step
    own_overhead_ms: float  # the overhead with an arena per session (arena="session")
    own_cpu_overhead_ms: float

    @property
    def min_overhead_ms(self) -> float:
        return self.cut_min_ms - self.one_min_ms


# ---------------------------------------------------------------------------- artifacts


def prepare(workdir: Path, precision: str) -> Path:
    """workdir/<precision>/{model.onnx, dense.onnx, pieces/}, built once."""
    out = workdir / precision
    if (out / "pieces" / piece_files(12)[-1]).exists():
        return out
    import onnx
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from export.cut import cut_at_attention
    from export.gqa_graph import build_gpt2_graph
    from export.kv_scales import calibrate
    from export.onnx_export import save_onnx

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = GPT2Config()  # the `gpt2` shape, 50257-row token table
    model = GPT2LMHeadModel(config).eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    scales = None
    if precision == "int8":
        rng = np.random.default_rng(0)
        scales = calibrate(model, rng.integers(0, config.vocab_size, (16, 128)).tolist())
    fp32 = save_onnx(build_gpt2_graph(state, config, scales), out / "fp32.onnx")
    if precision == "int8":
        from export.quantize import quantize_int8

        (out / "q").mkdir(exist_ok=True)
        quantize_int8(fp32, out / "q" / "model.onnx").rename(out / "model.onnx")
        fp32.unlink()
    else:
        fp32.rename(out / "model.onnx")
    cut_at_attention(out / "model.onnx", out / "pieces", config.n_layer)
    save_onnx(dense_only(onnx.load(str(out / "model.onnx"))), out / "dense.onnx")
    return out


def dense_only(model):
    """The fused graph with each attention replaced by its q (the cut's stand-in) and the
    logits at `logit_index` rows of the flattened tokens: one session, the same dense math."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0], np.int64), "q_start"),
            numpy_helper.from_array(np.array([HIDDEN], np.int64), "q_end"),
            numpy_helper.from_array(np.array([-1], np.int64), "q_axis"),
        ]
    )
    nodes = []
    flat = {out for n in graph.node if "last_index" in n.input for out in n.output}
    for node in graph.node:
        if node.op_type == "GroupQueryAttention":
            inputs = [node.input[0], "q_start", "q_end", "q_axis"]
            nodes.append(helper.make_node("Slice", inputs, [node.output[0]]))
        elif node.op_type == "Gather" and node.input[1] in flat:
            nodes.append(helper.make_node("Gather", [node.input[0], "logit_index"], node.output))
        else:
            nodes.append(node)
    wanted = {"logits"}
    live = []
    for node in reversed(nodes):  # nodes are in topological order
        if wanted & set(node.output):
            live.append(node)
            wanted |= set(node.input)
    del graph.node[:]
    graph.node.extend(reversed(live))
    inputs = [i for i in graph.input if i.name in wanted]
    inputs.append(helper.make_tensor_value_info("logit_index", TensorProto.INT64, ["rows"]))
    del graph.input[:]
    graph.input.extend(inputs)
    outputs = [o for o in graph.output if o.name == "logits"]
    del graph.output[:]
    graph.output.extend(outputs)
    used = {i for n in graph.node for i in n.input}
    kept = [w for w in graph.initializer if w.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model, full_check=False)
    return model


# ---------------------------------------------------------------------------- timing


def time_ms(call, calls: int) -> list[float]:
    """Milliseconds of each of `calls` calls, after one warm-up (allocation, planning)."""
    call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def one_session_call(path: Path, shape: Shape, config: RunnerConfig, pool: str, spin: str):
    import onnxruntime as ort

    from server.dense import use_global_pool

    options = session_options(config)
    if spin == "run":
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if pool == "global":
        use_global_pool(config.intra_op_threads)
        options.use_per_session_threads = False
        options.intra_op_num_threads = 0
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        "input_ids": rng.integers(0, 50257, (1, shape.tokens)),
        "position_ids": np.array([shape.positions], np.int64),
        "logit_index": np.array(shape.logit_rows, np.int64),
    }
    feeds = {name: np.ascontiguousarray(value, dtype=np.int64) for name, value in feeds.items()}
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_input(name, "cpu", 0, np.int64, value.shape, value.ctypes.data)
    logits = np.empty((len(shape.logit_rows), 50257), np.float32)
    binding.bind_output("logits", "cpu", 0, np.float32, logits.shape, logits.ctypes.data)

    def call():  # holds the bound arrays
        session.run_with_iobinding(binding)
        return feeds, logits

    return call


class CopyAttention:
    """The stand-in: q copied into the attention buffer (a memcpy of [T, C])."""

    name = "copy"

    def __call__(self, layer: int, qkv: np.ndarray, out: np.ndarray) -> None:
        np.copyto(out, qkv[:, : out.shape[1]])


class KernelAttention:
    """kvserve's kernel (kernels.paged_attention) over block pools filled for the shape:
    decode rows at --context, or prompts from position 0; each call rewrites the same slots."""

    name = "kernel"
    BLOCK = 16

    def __init__(self, shape: Shape, precision: str, art: Path, threads: int) -> None:
        import kernels

        self.kernel, self.threads = kernels.paged_attention, threads
        decode = shape.name.startswith("decode")
        rows = len(shape.logit_rows)
        lengths = [1] * rows if decode else [shape.tokens // rows] * rows
        self.context = np.array([shape.positions[0] if decode else 0] * rows, np.int32)
        self.starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        per_row = -(-(int(self.context[0]) + lengths[0]) // self.BLOCK)
        self.tables = np.arange(rows * per_row, dtype=np.int32).reshape(rows, per_row)
        int8 = precision == "int8"
        scales = np.load(art / "pieces" / "kv_scales.npy") if int8 else None
        self.scales = (
            [{"key_scale": s[0], "value_scale": s[1]} for s in scales]
            if scales is not None
            else [{}] * 12
        )
        rng = np.random.default_rng(0)
        pool_shape = (rows * per_row, 12, self.BLOCK, 64)
        self.pools = []
        for _ in range(12):  # random contents: the kernel reads real pages, not the zero page
            if int8:
                pair = [rng.integers(-127, 128, pool_shape, dtype=np.int8) for _ in range(2)]
            else:
                pair = [rng.standard_normal(pool_shape, dtype=np.float32) for _ in range(2)]
            self.pools.append(pair)

    def __call__(self, layer: int, qkv: np.ndarray, out: np.ndarray) -> None:
        keys, values = self.pools[layer]
        self.kernel(
            qkv,
            keys,
            values,
            self.tables,
            self.starts,
            self.context,
            out,
            threads=self.threads,
            **self.scales[layer],
        )


def cut_call(dense, shape: Shape, attention):
    """One step through the pieces, `attention` between them."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50257, shape.tokens)
    positions = np.array(shape.positions, np.int64)
    index = np.array(shape.logit_rows, np.int64)

    def step():
        hidden, qkv = dense.embed(ids, positions)
        for k in range(1, dense.num_layers + 1):
            attn = dense.attn_buffer(shape.tokens)
            attention(k - 1, qkv, attn)
            if k == dense.num_layers:
                return dense.head(attn, hidden, index)
            hidden, qkv = dense.layer(k, attn, hidden)

    return step


def one_with_attention(one, dense, shape: Shape, attention):
    """The one-session dense step, then the same attention calls the cut makes (on one qkv):
    the cut's work without the cut."""
    rng = np.random.default_rng(0)
    _, qkv = dense.embed(rng.integers(0, 50257, shape.tokens), np.array(shape.positions))
    qkv, attn = qkv.copy(), np.empty((shape.tokens, dense.hidden_size), np.float32)

    def step():
        one()
        for layer in range(dense.num_layers):
            attention(layer, qkv, attn)

    return step


def plain_run_call(dense, shape: Shape, attention):
    """The cut_call step through session.run: inputs by numpy, outputs allocated per call."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50257, shape.tokens)
    positions = np.array(shape.positions, np.int64)
    index = np.array(shape.logit_rows, np.int64)
    sessions = dense.sessions

    def step():
        hidden, qkv = sessions[0].run(None, {"input_ids": ids, "position_ids": positions})
        for k in range(1, dense.num_layers + 1):
            attn = np.empty((shape.tokens, dense.hidden_size), np.float32)
            attention(k - 1, qkv, attn)
            if k == dense.num_layers:
                feeds = {"attn": attn, "hidden": hidden, "logit_index": index}
                return sessions[-1].run(None, feeds)[0]
            hidden, qkv = sessions[k].run(None, {"attn": attn, "hidden": hidden})

    return step


def paired(calls: dict, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU ms of one call of each way per round, the order alternating: calls side
    by side see the same load, so their per-round differences cancel most of it."""
    for call in calls.values():
        call()  # warm-up: allocation, first-run planning
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            calls[name]()
            wall[name].append((time.perf_counter() - start) * 1000)
            cpu[name].append((time.process_time() - start_cpu) * 1000)
    return wall, cpu


def measure_pool(args, pool: str) -> list[Row]:
    """Every precision x shape x spin (x attention) on ONNX Runtime pools of one kind."""
    from server.dense import DenseModel

    rows = []
    spins = ["on"] if pool == "global" else args.spins  # the global pool always spins
    for precision in args.precisions:
        art = args.workdir / precision
        for shape in shapes(args):
            for spin in spins:
                config = RunnerConfig("cpu", args.threads, spin=spin != "off")
                one = one_session_call(art / "dense.onnx", shape, config, pool, spin)
                dense = DenseModel(art / "pieces", piece_files(12), config, pool=pool, spin=spin)
                own = None  # the same with an arena per session
                if pool == "session" and spin == "off" and args.own_arenas:
                    own = DenseModel(
                        art / "pieces", piece_files(12), config, spin=spin, arena="session"
                    )
                for kind in args.attention:
                    attention = (
                        KernelAttention(shape, precision, art, args.threads)
                        if kind == "kernel"
                        else CopyAttention()
                    )
                    calls = {
                        "one": one_with_attention(one, dense, shape, attention),
                        "cut": cut_call(dense, shape, attention),
                    }
                    if pool == "session" and spin == "off":
                        calls["run"] = plain_run_call(dense, shape, attention)
                    if own is not None:
                        calls["own"] = cut_call(own, shape, attention)
                    wall, cpu = paired(calls, rounds_for(shape, args))
                    rows.append(summary(precision, shape, pool, spin, kind, wall, cpu))
                    del attention, calls
                del one, dense, own
    return rows


def _paired(times: dict[str, list[float]], name: str) -> float:
    if name not in times:
        return float("nan")
    return statistics.median(a - b for a, b in zip(times[name], times["one"], strict=True))


def summary(precision, shape, pool, spin, kind, wall, cpu) -> Row:
    diffs = [c - o for c, o in zip(wall["cut"], wall["one"], strict=True)]
    cpu_diffs = [c - o for c, o in zip(cpu["cut"], cpu["one"], strict=True)]
    row = Row(
        precision,
        shape.name,
        pool,
        spin,
        kind,
        statistics.median(wall["one"]),
        statistics.median(wall["cut"]),
        statistics.median(diffs),
        min(wall["one"]),
        min(wall["cut"]),
        statistics.median(cpu_diffs),
        statistics.median(wall["run"]) - statistics.median(wall["cut"])
        if "run" in wall
        else float("nan"),
        _paired(wall, "own"),
        _paired(cpu, "own"),
    )
    print(
        f"  {precision} {shape.name} {pool} spin={spin} {kind}: {row.one_ms:.2f} vs "
        f"{row.cut_ms:.2f} ms, paired {row.overhead_ms:+.2f}, min {row.min_overhead_ms:+.2f}, "
        f"own arenas {row.own_overhead_ms:+.2f}",
        file=sys.stderr,
        flush=True,
    )
    return row


def rounds_for(shape: Shape, args) -> int:
    return max(3, args.rounds // 6) if shape.tokens > 256 else args.rounds


def shapes(args) -> list[Shape]:
    found = [decode_shape(n, args.context) for n in args.tokens]
    prompts, length = (int(x) for x in args.prefill.split("x"))
    return [*found, prefill_shape(prompts, length)] if prompts else found


# ---------------------------------------------------------------------------- fused


def fused_profile(args, precision: str) -> dict[str, tuple[float, float]]:
    """Shape -> (wall ms per call, GroupQueryAttention kernel ms) of today's fused graph."""
    import onnxruntime as ort
    from op_profile import op_times

    from server.runner import OnnxRunner

    arch = Architecture(12, 12, 64, HIDDEN, 50257, 1024)
    path = args.workdir / precision / "model.onnx"
    config = RunnerConfig("cpu", args.threads, spin=True)
    result = {}
    for shape in shapes(args):
        runner = OnnxRunner(path, arch, config)
        call, calls = fused_call(runner, shape, args)  # its set-up runs outside the profile
        options = session_options(config)
        options.enable_profiling = True
        options.profile_file_prefix = f"/tmp/cut_overhead_{os.getpid()}"
        runner.session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        wall = statistics.median(time_ms(call, calls))
        totals, runs = op_times(Path(runner.session.end_profiling()), skip=1)
        gqa = totals.get("GroupQueryAttention", 0.0) / 1000 / max(runs, 1)
        result[shape.name] = (wall, gqa)
        print(
            f"  fused {precision} {shape.name}: {wall:.1f} ms, attention {gqa:.1f} ms",
            file=sys.stderr,
            flush=True,
        )
    return result


def fused_call(runner, shape: Shape, args):
    """(one call of today's fused graph for `shape`, how many to time): decode rows at
    --context (the cache filled first), or the batched prefill."""
    rng = np.random.default_rng(0)
    if shape.name.startswith("decode"):
        rows = shape.tokens
        cache = runner.new_cache(rows)
        prompts = rng.integers(0, 50257, (rows, args.context)).tolist()
        for i in range(0, rows, 8):
            runner.prefill(cache, prompts[i : i + 8])
        tokens = rng.integers(0, 50257, rows)
        return (lambda: runner.decode_step(cache, tokens)), rounds_for(shape, args)
    count, length = (int(x) for x in args.prefill.split("x"))
    prompts = rng.integers(0, 50257, (count, length)).tolist()
    return (lambda: runner.prefill(runner.new_cache(count), prompts)), rounds_for(shape, args)


# ---------------------------------------------------------------------------- memory


def rss_child(args) -> None:
    """Resident MB after loading one way, and after a prefill step (a fresh process)."""
    import ctypes

    from artifact import SharedWeight
    from server.dense import DenseModel

    art = args.workdir / args.rss_precision
    config = RunnerConfig("cpu", args.threads, spin=False)
    trim = ctypes.CDLL("libc.so.6").malloc_trim  # freed load-time buffers back to the system
    shape = prefill_shape(4, 144)
    before = _rss_mb()
    if args.rss_of == "one":
        step = one_session_call(art / "dense.onnx", shape, config, "session", "off")
    elif args.rss_of in ("pieces", "own-arenas"):
        arena = "shared" if args.rss_of == "pieces" else "session"
        dense = DenseModel(art / "pieces", piece_files(12), config, arena=arena)
        step = cut_call(dense, shape, CopyAttention())
    else:  # one mapped copy of each shared weight handed to every session that reads it
        shared = [SharedWeight(**w) for w in json.loads((art / "shared.json").read_text())]
        keep = shared_sessions(art / "pieces", shared, config)  # noqa: F841
        step = None
    trim(0)
    loaded = _rss_mb() - before
    if step is not None:
        step()
        trim(0)
    print(json.dumps({"loaded_mb": loaded, "stepped_mb": _rss_mb() - before}))


def shared_sessions(pieces: Path, shared: list, config: RunnerConfig) -> list:
    """The pieces' sessions with each shared weight mapped once and handed to each session
    that reads it (SessionOptions.add_initializer): what server/dense.py measured and left."""
    import onnxruntime as ort

    options = [session_options(replace(config, spin=False)) for _ in piece_files(12)]
    values = {}
    for weight in shared:
        array = np.memmap(
            pieces / weight.file, np.dtype(weight.dtype), "r", weight.offset, tuple(weight.shape)
        )
        values[weight.name] = ort.OrtValue.ortvalue_from_numpy(array)
        for k in weight.pieces:
            options[k].add_initializer(weight.name, values[weight.name])
    sessions = [
        ort.InferenceSession(str(pieces / name), opts, providers=["CPUExecutionProvider"])
        for name, opts in zip(piece_files(12), options, strict=True)
    ]
    return [sessions, values]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_table(args) -> None:
    print(
        "\nresident MB a fresh process adds by loading -> after one 576-token prefill step "
        "(malloc_trim'd): one = dense.onnx, one session; pieces = DenseModel (one shared "
        "arena; each session loads its own copy of the token table); own-arenas = DenseModel "
        "with an arena per session; mapped = the pieces with one mapping of the table handed "
        "to both sessions (add_initializer; loading only)"
    )
    for precision in args.precisions:
        _write_shared_json(args.workdir / precision)
        sizes = {p.name: p.stat().st_size for p in (args.workdir / precision / "pieces").iterdir()}
        shared = sizes.get("dense_shared.data", 0)
        pieces = sum(v for k, v in sizes.items() if k.endswith(".onnx"))
        model = (args.workdir / precision / "model.onnx").stat().st_size
        line = [
            f"  {precision}: files model.onnx {model / 1e6:.0f} MB, pieces {pieces / 1e6:.0f} MB"
            f" + token table {shared / 1e6:.0f} MB;"
        ]
        for how in ("one", "pieces", "own-arenas", "mapped"):
            cmd = [sys.executable, __file__, "--workdir", str(args.workdir), "--rss-of", how]
            cmd += ["--rss-precision", precision, "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            mb = json.loads(out.splitlines()[-1])
            line.append(f"{how} {mb['loaded_mb']:.0f} -> {mb['stepped_mb']:.0f}")
        print(" ".join(line))


def _write_shared_json(art: Path) -> None:
    """The shared weights' records as the export's manifest holds them (read the pieces)."""
    import onnx

    records = []
    for k, name in enumerate(piece_files(12)):
        proto = onnx.load(str(art / "pieces" / name), load_external_data=False)
        for t in proto.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in t.external_data}
                dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name
                found = next((r for r in records if r["name"] == t.name), None)
                if found is None:
                    records.append(
                        {
                            "name": t.name,
                            "file": info["location"],
                            "offset": int(info.get("offset", 0)),
                            "dtype": dtype,
                            "shape": list(t.dims),
                            "pieces": [k],
                        }
                    )
                else:
                    found["pieces"].append(k)
    (art / "shared.json").write_text(json.dumps(records))


# ---------------------------------------------------------------------------- report


def print_table(rows: list[Row], fused: dict) -> None:
    print(
        "\nms per step. one: the dense math as one session, then the step's attention calls; "
        "cut: the 13 pieces with the attention between them. overhead: the median of "
        "(cut - one) over rounds timed side by side (and from the fastest calls); its share "
        "of one, and of today's fused step (GroupQueryAttention's share of it in brackets)."
    )
    head = "| artifact | step | pool | spin | attention | one | cut | overhead ms | "
    head += "% of one | fused step today (GQA) | % of fused | CPU ms | run() extra | "
    head += "arena per session: overhead, CPU ms |"
    print(head)
    print("|" + "---|" * 14)
    for r in rows:
        wall, gqa = fused.get((r.precision, r.shape), (float("nan"), float("nan")))
        share, min_share = r.overhead_ms / r.one_ms, r.min_overhead_ms / r.one_min_ms
        print(
            f"| {r.precision} | {r.shape} | {r.pool} | {r.spin} | {r.attention} | "
            f"{r.one_ms:.2f} ({r.one_min_ms:.2f}) | {r.cut_ms:.2f} ({r.cut_min_ms:.2f}) | "
            f"{r.overhead_ms:+.2f} ({r.min_overhead_ms:+.2f}) | {share:+.1%} ({min_share:+.1%})"
            f" | {wall:.1f} ({gqa:.1f}) | {r.overhead_ms / wall:+.1%} | "
            f"{r.cpu_overhead_ms:+.2f} | {r.run_extra_ms:+.2f} | "
            f"{r.own_overhead_ms:+.2f}, {r.own_cpu_overhead_ms:+.2f} |"
        )


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench" / "cut")
    p.add_argument("--precisions", default="fp32,int8", type=lambda s: s.split(","))
    p.add_argument(
        "--tokens",
        default="8,37,64",
        type=lambda s: [int(x) for x in s.split(",")],
        help="decode steps of this many one-token rows",
    )
    p.add_argument("--context", type=int, default=220, help="decode rows' context (fused run)")
    p.add_argument("--prefill", default="4x144", help="PROMPTSxTOKENS, 0x0 for none")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=30, help="timed steps of each way (prefill: 1/6)")
    p.add_argument(
        "--own-arenas",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the pieces with a memory arena per session (DenseModel's default is "
        "one shared arena); session pools, no spinning",
    )
    p.add_argument(
        "--attention",
        default="copy,kernel",
        type=lambda s: s.split(","),
        help="between the pieces: copy (q copied: the cut alone) and/or kernel "
        "(kernels.paged_attention over a block pool: with the kernel's threads)",
    )
    p.add_argument(
        "--pools",
        default="session,global",
        type=lambda s: s.split(","),
        help="ONNX Runtime intra-op pools: session (one per piece) and/or global; none",
    )
    p.add_argument(
        "--spins",
        default="off,on",
        type=lambda s: s.split(","),
        help="per-session pools: off | run (spin only while a run lasts) | on",
    )
    p.add_argument(
        "--fused",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also profile today's fused graph (attention included)",
    )
    p.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure resident memory of each way of loading",
    )
    p.add_argument("--pool", help=argparse.SUPPRESS)  # child: measure this pool, print JSON
    p.add_argument("--rss-of", help=argparse.SUPPRESS)
    p.add_argument("--rss-precision", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_of:
        rss_child(args)
        return 0
    if args.pool:
        print(json.dumps([asdict(r) for r in measure_pool(args, args.pool)]))
        return 0
    for precision in args.precisions:
        print(f"preparing {precision} in {args.workdir}", file=sys.stderr, flush=True)
        prepare(args.workdir, precision)
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    rows: list[Row] = []
    for pool in [p for p in args.pools if p != "none"]:  # a process each: see use_global_pool
        cmd = [sys.executable, __file__, *sys.argv[1:], "--pool", pool]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
        rows += [Row(**r) for r in json.loads(out.splitlines()[-1])]
    fused = {}
    if args.fused:
        for precision in args.precisions:
            for shape, value in fused_profile(args, precision).items():
                fused[(precision, shape)] = value
    print_table(rows, fused)
    if args.memory:
        memory_table(args)
    print(f"\nload average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
