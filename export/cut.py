"""The finished serving graph cut at its attention nodes: the dense pieces of "paged-v1".

kvserve runs attention in its own kernel over a paged KV cache and keeps the dense math in
ONNX Runtime, as num_layers + 1 graphs called in turn (artifact/graph.py has the contract).
The pieces are not built separately: the finished graph of any recipe (fp32, dynamic int8,
int4 MatMulNBits, an int8 KV cache, the lm_head tied to the embedding) is built exactly as
for the fused target and then cut at its GroupQueryAttention nodes, so every quantization
path is the one the fused graph already takes. The cut:
- gives every node a level, the number of attention nodes before it; level k is piece k;
- checks that piece k > 0 takes exactly layer k-1's attention output and one residual-stream
  tensor from piece k-1, and names them (and the outputs) by the contract;
- drops the batch axis: tokens are `[T]`, activations `[T, C]`, logits come from
  `logit_index` rows instead of each row's last position;
- keeps in each piece only the initializers it reads; a large one two pieces read (the token
  table: piece 0's embedding, piece L's lm_head) is written once, as ONNX external data that
  both pieces point at (SHARED_WEIGHTS_FILE), so it is stored once on disk and a loader can
  map it once for both sessions;
- takes the int8 KV cache's per-channel scales from the attention nodes' scale inputs.
Hand-written: onnx.utils.Extractor extracts a subgraph between named tensors, but it needs
shape-inferred value_info for every cut tensor (ONNX shape inference cannot type the
com.microsoft ops' outputs) and does none of the renaming, batch-axis or sharing work here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from artifact import (
    CONTROL_INPUTS,
    KV_SCALES_FILE,
    LOGITS,
    SHARED_WEIGHTS_FILE,
    SharedWeight,
    piece_file,
)
from artifact.graph import (
    ATTN,
    HIDDEN,
    HIDDEN_OUT,
    INPUT_IDS,
    LOGIT_INDEX,
    POSITION_IDS,
    QKV,
    piece_inputs,
    piece_outputs,
)
from export import ExportFailed
from export.onnx_export import model_files, save_onnx

ATTENTION = "GroupQueryAttention"
SHARE_BYTES = 1 << 14  # initializers at least this big that several pieces read are stored once
ALIGN = 4096  # shared tensors start on page boundaries: mappable in place
SCALE_INPUTS = (12, 13)  # GroupQueryAttention's k_scale, v_scale inputs (int8 cache)


@dataclass(frozen=True)
class CutResult:
    files: list[Path]  # everything written: the pieces, the shared weights, the kv scales
    pieces: list[str]  # piece file names in call order
    kv_cache: str  # the attention's KV cache element type: float32 | float16 | int8
    kv_scales_file: str  # "" unless the cache is int8
    shared: list[SharedWeight]
    piece_bytes: dict[str, int]  # piece file -> bytes (shared weights not counted)


def cut_at_attention(model_path: Path, out_dir: Path, num_layers: int) -> CutResult:
    """Cut the serving graph at `model_path` into out_dir's dense pieces (+ shared weights,
    kv scales); raise ExportFailed with one line if the graph is not the shape expected."""
    model = onnx.load(str(model_path))
    try:
        return _Cut(model, num_layers).write(Path(out_dir))
    except ValueError as e:
        raise ExportFailed(f"cannot cut {model_path} at attention: {e}") from e


class _Cut:
    def __init__(self, model: onnx.ModelProto, num_layers: int) -> None:
        self.model = model
        self.layers = num_layers
        graph = model.graph
        self.weights = {init.name: init for init in graph.initializer}
        nodes = _topological(graph)
        self.attention = [n for n in nodes if n.op_type == ATTENTION]
        if len(self.attention) != num_layers:
            raise ValueError(f"{len(self.attention)} {ATTENTION} nodes for {num_layers} layers")
        nodes = _logits_at(nodes, LOGIT_INDEX)
        nodes = _live(nodes, [LOGITS, *(n.input[0] for n in self.attention)])
        self.levels = _levels(nodes, self.attention, graph.input)
        self.nodes = [n for n in nodes if n.op_type != ATTENTION]
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.hidden_size = _hidden_size(graph, self.attention[0])

    def write(self, out_dir: Path) -> CutResult:
        out_dir.mkdir(parents=True, exist_ok=True)
        piece_nodes = [self._piece_nodes(k) for k in range(self.layers + 1)]
        boundary = self._boundaries(piece_nodes)
        used = [_initializer_names(nodes, self.weights) for nodes in piece_nodes]
        shared = self._shared(used)
        shared_path = out_dir / SHARED_WEIGHTS_FILE
        records = _write_shared(shared, self.weights, used, shared_path) if shared else []
        files = [shared_path] if shared else []
        names, sizes = [], {}
        for k, nodes in enumerate(piece_nodes):
            piece = self._piece(k, nodes, boundary, used[k], {r.name: r for r in records})
            path = save_onnx(piece, out_dir / piece_file(k))
            names.append(path.name)
            sizes[path.name] = path.stat().st_size
            files += [f for f in model_files(path) if f not in files]  # + any .data of its own
        kv_cache, scales = self._kv_cache()
        if scales is not None:
            np.save(out_dir / KV_SCALES_FILE, scales)
            files.append(out_dir / KV_SCALES_FILE)
        scales_file = KV_SCALES_FILE if scales is not None else ""
        return CutResult(files, names, kv_cache, scales_file, records, sizes)

    def _piece_nodes(self, k: int) -> list[onnx.NodeProto]:
        """Piece k's nodes in graph order: level k, plus any constant-only nodes they read."""
        chosen = {id(n) for n in self.nodes if self.levels.get(_first_output(n)) == k}
        stack = [i for n in self.nodes if id(n) in chosen for i in n.input]
        while stack:
            name = stack.pop()
            node = self.producer.get(name)
            constant = node is not None and _first_output(node) not in self.levels
            if constant and id(node) not in chosen:
                chosen.add(id(node))
                stack.extend(node.input)
        return [n for n in self.nodes if id(n) in chosen]

    def _boundaries(self, piece_nodes: list[list[onnx.NodeProto]]) -> list[dict[str, str]]:
        """Per piece, original tensor name -> contract name of each input and output."""
        entering = [_entering(nodes, self.weights) for nodes in piece_nodes]
        if entering[0] != {INPUT_IDS, POSITION_IDS}:
            raise ValueError(f"piece 0 reads {sorted(entering[0])}, not input_ids, position_ids")
        renames: list[dict[str, str]] = [{} for _ in piece_nodes]
        for k in range(1, self.layers + 1):
            attn = self.attention[k - 1].output[0]
            residual = entering[k] - {attn, LOGIT_INDEX}
            if attn not in entering[k] or len(residual) != 1:
                raise ValueError(
                    f"piece {k} reads {sorted(entering[k])}: expected layer {k - 1}'s attention "
                    "output and one residual-stream tensor"
                )
            (hidden,) = residual
            if self.levels.get(hidden) != k - 1:
                raise ValueError(f"piece {k} reads {hidden} from outside piece {k - 1}")
            renames[k] |= {attn: ATTN, hidden: HIDDEN}
            renames[k - 1] |= {hidden: HIDDEN_OUT, self.attention[k - 1].input[0]: QKV}
        for k, attention in enumerate(self.attention):
            if self.levels.get(attention.input[0]) != k:
                raise ValueError(f"layer {k}'s attention input is not computed in piece {k}")
        return renames

    def _shared(self, used: list[set[str]]) -> list[str]:
        readers: dict[str, int] = {}
        for names in used:
            for name in names:
                readers[name] = readers.get(name, 0) + 1
        big = (n for n, count in readers.items() if count > 1)
        return sorted(n for n in big if _nbytes(self.weights[n]) >= SHARE_BYTES)

    def _piece(
        self,
        k: int,
        nodes: list[onnx.NodeProto],
        boundary: list[dict[str, str]],
        used: set[str],
        shared: dict[str, SharedWeight],
    ) -> onnx.ModelProto:
        rename = boundary[k]
        _check_no_clash(nodes, rename, self.weights)
        renamed = [_renamed(n, rename) for n in nodes]
        initializers = []
        for name in sorted(used):
            tensor = self.weights[name]
            if name in shared:
                initializers.append(_external(tensor, shared[name]))
            else:
                initializers.append(_without_batch_axis(tensor, renamed))
        inputs = [self._value(name) for name in piece_inputs(k, self.layers)]
        outputs = [self._value(name) for name in piece_outputs(k, self.layers)]
        graph = helper.make_graph(renamed, f"gpt2_dense_{k:02d}", inputs, outputs, initializers)
        piece = helper.make_model(
            graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version
        )
        piece.producer_name = "kvserve-export"
        return piece

    def _value(self, name: str) -> onnx.ValueInfoProto:
        c = self.hidden_size
        if name in (INPUT_IDS, POSITION_IDS, LOGIT_INDEX):
            axis = "logits" if name == LOGIT_INDEX else "tokens"
            dtype = helper.np_dtype_to_tensor_dtype(np.dtype(CONTROL_INPUTS.get(name, "int64")))
            return helper.make_tensor_value_info(name, dtype, [axis])
        if name == LOGITS:
            vocab = _vocab_size(self.model.graph)
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["logits", vocab])
        width = 3 * c if name == QKV else c
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["tokens", width])

    def _kv_cache(self) -> tuple[str, np.ndarray | None]:
        """The cache's element type, and the int8 cache's scales [L, 2, H * D] (else None)."""
        first = self.attention[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in first.attribute}
        if attrs.get("kv_cache_bit_width", 0) != 8:
            past = next(v for v in self.model.graph.input if v.name == first.input[3])
            dtype = helper.tensor_dtype_to_np_dtype(past.type.tensor_type.elem_type)
            return dtype.name, None
        scales = []
        for node in self.attention:
            names = [node.input[i] if len(node.input) > i else "" for i in SCALE_INPUTS]
            if not all(name in self.weights for name in names):
                raise ValueError(
                    f"{node.name or node.output[0]}: int8 cache without constant scales"
                )
            scales.append([numpy_helper.to_array(self.weights[n]).reshape(-1) for n in names])
        return "int8", np.asarray(scales, dtype=np.float32)  # [L, 2, H * D]


def _first_output(node: onnx.NodeProto) -> str:
    return next((out for out in node.output if out), "")


def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes in an order where each comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {w.name for w in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("the graph has a cycle or reads an undefined tensor")
        ordered += ready
        available.update(out for n in ready for out in n.output)
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    return ordered


def _logits_at(nodes: list[onnx.NodeProto], index_name: str) -> list[onnx.NodeProto]:
    """The fused graph picks each row's last position (`last_index`) for the lm_head; the
    pieces pick the `logit_index` rows of the flat token axis: rewire that Gather's indices."""
    flat = {out for n in nodes if "last_index" in n.input for out in n.output}
    gathers = [
        n for n in nodes if n.op_type == "Gather" and len(n.input) == 2 and n.input[1] in flat
    ]
    if len(gathers) != 1:
        raise ValueError("no single Gather picks the logits' rows from last_index")
    rewired = onnx.NodeProto()
    rewired.CopyFrom(gathers[0])
    rewired.input[1] = index_name
    return [rewired if n is gathers[0] else n for n in nodes]


def _live(nodes: list[onnx.NodeProto], wanted: Iterable[str]) -> list[onnx.NodeProto]:
    """The nodes `wanted` depends on (attention nodes included), in their order."""
    producer = {out: n for n in nodes for out in n.output}
    live, stack = set(), list(wanted)
    while stack:
        node = producer.get(stack.pop())
        if node is not None and id(node) not in live:
            live.add(id(node))
            stack.extend(node.input)
    return [n for n in nodes if id(n) in live]


def _levels(
    nodes: list[onnx.NodeProto],
    attention: list[onnx.NodeProto],
    graph_inputs: Iterable[onnx.ValueInfoProto],
) -> dict[str, int]:
    """Tensor -> how many attention nodes come before it; constants have no level."""
    order = {id(n): i for i, n in enumerate(attention)}
    levels = {v.name: 0 for v in graph_inputs} | {LOGIT_INDEX: 0}
    for node in nodes:
        if id(node) in order:
            for out in node.output:
                levels[out] = order[id(node)] + 1
            continue
        found = [levels[i] for i in node.input if i in levels]
        if found:
            for out in node.output:
                levels[out] = max(found)
    return levels


def _entering(nodes: list[onnx.NodeProto], weights: dict) -> set[str]:
    """Tensors the nodes read that none of them makes (initializers left out)."""
    made = {out for n in nodes for out in n.output}
    return {i for n in nodes for i in n.input if i and i not in made and i not in weights}


def _initializer_names(nodes: list[onnx.NodeProto], weights: dict) -> set[str]:
    return {i for n in nodes for i in n.input if i in weights}


def _renamed(node: onnx.NodeProto, rename: dict[str, str]) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    for field in (copy.input, copy.output):
        for i, name in enumerate(field):
            field[i] = rename.get(name, name)
    return copy


def _check_no_clash(nodes: list[onnx.NodeProto], rename: dict[str, str], weights: dict) -> None:
    """The contract's names must be free in the piece (before renaming) and among weights."""
    names = {name for n in nodes for name in (*n.input, *n.output)} - set(rename)
    clash = (names | set(weights)) & set(rename.values())
    if clash:
        raise ValueError(f"the graph already uses the contract's names {sorted(clash)}")


def _without_batch_axis(tensor: TensorProto, nodes: list[onnx.NodeProto]) -> TensorProto:
    """A Reshape target `[0, 0, ...]` kept the batch and length axes: tokens have one axis."""
    is_shape = any(n.op_type == "Reshape" and n.input[1] == tensor.name for n in nodes)
    if not is_shape or tensor.data_type != TensorProto.INT64:
        return tensor
    shape = numpy_helper.to_array(tensor)
    if shape.ndim != 1 or len(shape) < 3 or shape[0] != 0 or shape[1] != 0:
        return tensor
    return numpy_helper.from_array(shape[1:], tensor.name)


def _nbytes(tensor: TensorProto) -> int:
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return numpy_helper.to_array(tensor).nbytes


def _write_shared(
    names: list[str], weights: dict, used: list[set[str]], path: Path
) -> list[SharedWeight]:
    records = []
    with open(path, "wb") as f:
        for name in names:
            array = numpy_helper.to_array(weights[name])
            offset = -f.tell() % ALIGN + f.tell()
            f.seek(offset)
            f.write(np.ascontiguousarray(array).tobytes())
            readers = tuple(k for k, names_k in enumerate(used) if name in names_k)
            records.append(
                SharedWeight(name, path.name, offset, array.dtype.name, array.shape, readers)
            )
    return records


def _external(tensor: TensorProto, record: SharedWeight) -> TensorProto:
    """`tensor` as a reference to its bytes in the shared weights file."""
    ref = TensorProto()
    ref.name, ref.data_type = tensor.name, tensor.data_type
    ref.dims.extend(tensor.dims)
    ref.data_location = TensorProto.EXTERNAL
    for key, value in (
        ("location", record.file),
        ("offset", str(record.offset)),
        ("length", str(record.nbytes)),
    ):
        entry = ref.external_data.add()
        entry.key, entry.value = key, value
    return ref


def _hidden_size(graph: onnx.GraphProto, attention: onnx.NodeProto) -> int:
    """heads * head_dim, from the attention's cache input `[batch, H, capacity, D]`."""
    past = next(v for v in graph.input if v.name == attention.input[3])
    dims = [d.dim_value for d in past.type.tensor_type.shape.dim]
    if len(dims) != 4 or not dims[1] or not dims[3]:
        raise ValueError(f"{past.name}: cache shape {dims} is not [batch, heads, capacity, dim]")
    return dims[1] * dims[3]


def _vocab_size(graph: onnx.GraphProto) -> int | str:
    logits = next(o for o in graph.output if o.name == LOGITS)
    dim = logits.type.tensor_type.shape.dim[-1]
    return dim.dim_value or dim.dim_param
