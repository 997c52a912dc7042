"""SmoothQuant-style activation smoothing before int8 dynamic quantization.

Transformer activations carry a few channels with values 10-100x larger than the rest (worst at
the input of each feed-forward output projection, after GELU). Dynamic quantization uses one
uint8 scale per tensor, so those channels eat the range and every other channel is left with a
handful of levels: measured on the stand-in, that alone cost about 1 Spearman point on STS.

Smoothing moves the difficulty into the weights, which are quantized per channel and tolerate it:
for a MatMul ``y = x @ W`` pick per input channel ``s_j = max|x_j|^a / max|W_j|^(1-a)`` and
compute ``y = (x / s) @ (s * W)`` -- identical in exact arithmetic. ``x / s`` is one Mul with a
constant per group of MatMuls that share an input. Channel maxima come from running the fp32
graph on calibration text (the built-in multilingual probes by default). Down-projections whose
worst input channels are split off to fp32 (``outliers``) are not smoothed: with those channels
gone, smoothing only added error (measured, see ``smooth_graph``).

It rewrites an fp32 graph into an fp32 graph; quantization is ``quantize.py``'s job.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

import numpy as np


def _linear_nodes(model) -> Iterator[tuple[object, list[int]]]:
    """MatMul nodes with a constant 2-D weight, with that weight's [K, N]."""
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and len(inits[node.input[1]].dims) == 2:
            yield node, list(inits[node.input[1]].dims)


def down_projections(model) -> list[str]:
    """Names of the linear layers that shrink their input (K > N): the feed-forward outputs."""
    return [node.name for node, (k, n) in _linear_nodes(model) if k > n]


def _target_groups(model, patterns: tuple[str, ...], skip: Collection[str] = ()) -> dict[str, list]:
    """Activation tensor name -> MatMul nodes with a constant 2-D weight that consume it."""
    groups: dict[str, list] = {}
    for node, _ in _linear_nodes(model):
        if node.name not in skip and any(re.search(p, node.name) for p in patterns):
            groups.setdefault(node.input[0], []).append(node)
    return groups


def run_collecting(model, tensors: list[str], feeds: Iterable[dict[str, np.ndarray]]) -> Iterator[list[np.ndarray]]:
    """Run ``model`` unoptimised on each feed and yield the values of the inner ``tensors``."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in tensors:
        probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for feed in feeds:
        yield sess.run(tensors, feed)


def _channel_maxima(model, tensors: list[str], feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    amax: dict[str, np.ndarray] = {}
    for values in run_collecting(model, tensors, feeds):
        for name, value in zip(tensors, values):
            m = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            amax[name] = np.maximum(amax[name], m) if name in amax else m
    return amax


OUTLIER_SUFFIX = "_outliers_fp32"

# Ops that act channel by channel; an activation reached from an up-projection only through
# these can be recomputed for a subset of channels from a subset of the up-projection's columns.
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Erf", "Tanh", "Sigmoid", "Relu", "Gelu", "FastGelu",
                "BiasGelu", "Pow", "Sqrt", "Neg", "Exp", "Cast", "Identity"}


def _elementwise_chain(model, act: str, channels: int, inits: dict) -> tuple[object, list] | None:
    """The up-projection MatMul and the elementwise nodes between it and ``act``, or None.

    None when ``act`` is not such a function of one MatMul with a constant [K, channels] weight,
    or when a constant in the chain is shared with nodes outside it.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    # Constant nodes (the exporter writes GELU's 0.5, 1, sqrt(2) this way) may be read by both
    # paths as long as they broadcast: anything with a channel axis would need slicing.
    scalars = {
        n.output[0] for n in model.graph.node
        if n.op_type == "Constant" and n.attribute and list(n.attribute[0].t.dims) in ([], [1])
        and n.attribute[0].name == "value"
    }
    up, chain, todo, seen = None, [], [act], set()
    while todo:
        node = producers.get(todo.pop())
        if node is None:
            return None
        if id(node) in seen:  # a diamond (GELU reads its input twice): collected already
            continue
        seen.add(id(node))
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if w is not None and len(w.dims) == 2 and w.dims[1] == channels:
            if up is not None and up is not node:
                return None
            up = node
            continue
        if node.op_type not in _ELEMENTWISE:
            return None
        chain.append(node)
        todo.extend(i for i in node.input if i and i not in inits and i not in scalars)
    if up is None:
        return None
    inside = {id(n) for n in chain} | {id(up)}
    made = {o for n in chain for o in n.output} | set(up.output)
    for n in model.graph.node:
        # Outside readers of the chain's tensors (other than the group reading ``act``) would
        # see sliced data. (Constants are never sliced in place, so sharing them is fine.)
        if id(n) not in inside and any(i in made and (i != act or n.op_type != "MatMul") for i in n.input):
            return None
    order = {id(n): k for k, n in enumerate(model.graph.node)}
    return up, sorted(chain, key=lambda n: order[id(n)])


def _column_split_path(up, chain: list, split: np.ndarray, keep: np.ndarray, inits: dict) -> tuple[list, list]:
    """Clone ``up`` + ``chain`` for the channels ``split``; slice the originals down to ``keep``.

    Each clone's tensors get the suffix ``_outlier_cols``; constants whose last axis is the
    channel axis are replaced by sliced copies (the clone's to ``split``, the original's to ``keep``).
    Returns (new nodes, new initializers).
    """
    import onnx
    from onnx import numpy_helper

    channels = inits[up.input[1]].dims[1]
    rename: dict[str, str] = {}
    sliced: dict[str, tuple[str, str]] = {}
    new_inits = []

    def sliced_pair(name: str) -> tuple[str, str]:
        """(main, side) names for a constant: new sliced copies if it has the channel axis."""
        if name not in sliced:
            arr = numpy_helper.to_array(inits[name])
            if arr.ndim == 0 or arr.shape[-1] != channels:
                sliced[name] = (name, name)  # a scalar or broadcast constant: shared as it is
            else:
                # New names: the exporter dedupes equal constants, so others may read this one.
                sliced[name] = (name + "_int8_cols", name + "_outlier_cols")
                for new, cols in zip(sliced[name], (keep, split)):
                    new_inits.append(numpy_helper.from_array(np.ascontiguousarray(arr[..., cols]), new))
        return sliced[name]

    clones = []
    for node in [up, *chain]:
        clone = onnx.NodeProto()
        clone.CopyFrom(node)
        clone.name = node.name + "_outlier_cols"
        for i, name in enumerate(node.input):
            if name in rename:
                clone.input[i] = rename[name]
            elif name in inits:
                node.input[i], clone.input[i] = sliced_pair(name)
        for i, name in enumerate(clone.output):
            rename[name] = clone.output[i] = name + "_outlier_cols"
        clones.append(clone)
    return clones, new_inits


def _names_read(graph) -> set[str]:
    """Tensor names read by the graph's nodes (subgraphs included) or returned as outputs."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                names |= _names_read(sub)
    return names


def _constant_tensors(model, inits: dict) -> set[str]:
    """Initializers, Constant outputs, and Identity copies of those (how the exporter shares them)."""
    consts = set(inits)
    for node in model.graph.node:  # topological order: an Identity's input is seen first
        if node.op_type == "Constant" or (node.op_type == "Identity" and node.input[0] in consts):
            consts.update(node.output)
    return consts


def smooth_graph(
    in_path: Path,
    out_path: Path,
    calibration_feeds: Iterable[dict[str, np.ndarray]],
    alpha: float = 0.5,
    patterns: tuple[str, ...] = (r"MatMul$",),
    outliers: int = 0,
    skip: Collection[str] = (),
) -> dict:
    """Write the smoothed fp32 graph; returns what was done (for the manifest).

    ``outliers`` > 0 also splits off, for down-projections (weight [K, N] with K > N: the
    feed-forward output, whose post-GELU input and weights carry the worst outliers), that many
    input channels with the largest (activation max x weight max) into a small fp32 MatMul (named
    ``*_outliers_fp32``, which the quantizer must leave alone). Where the activation is an
    elementwise function (bias, GELU) of an up-projection, those channels are computed from that
    projection's columns on a side path and the int8 MatMul loses those rows; otherwise they are
    gathered from the activation and the int8 MatMul sees zeros there.
    Measured on the stand-in: splitting every MatMul instead gained little accuracy and cost 25%
    of the speed; see docs/int8-recipe.md. MatMuls named in ``skip`` (to stay fp32) are left
    as they are.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(in_path))
    groups = _target_groups(model, patterns, skip)
    amax = _channel_maxima(model, list(groups), calibration_feeds)
    inits = {i.name: i for i in model.graph.initializer}
    post_adds: list[tuple[str, object]] = []
    consts = _constant_tensors(model, inits)
    bias_add = {
        x: node for node in model.graph.node if node.op_type == "Add"
        for x in node.input if any(i in consts for i in node.input)
    }
    new_nodes: dict[str, list] = {}
    column_splits: list[tuple[str, object, list, np.ndarray, np.ndarray]] = []
    ratios = []
    applied: list[int] = []
    for act, nodes in groups.items():
        weights = {n.input[1]: numpy_helper.to_array(inits[n.input[1]]) for n in nodes}
        wmax = np.max([np.abs(w).max(axis=1) for w in weights.values()], axis=0)
        ratios.append(float(amax[act].max() / max(np.median(amax[act]), 1e-9)))
        # Channels that hurt int8 most: large activations times large weights.
        wants_split = outliers and all(w.shape[0] > w.shape[1] for w in weights.values())
        k = min(outliers, len(wmax) // 8)  # never more than an eighth of the channels
        split = np.sort(np.argsort(amax[act] * wmax)[::-1][:k]) if wants_split else np.zeros(0, np.int64)
        if len(split):
            applied.append(len(split))
        keep = np.setdiff1d(np.arange(len(wmax)), split)
        # Preferred: recompute the outlier channels from the up-projection's columns, so the int8
        # path never holds them (a Gather along the last axis cost 0.7 ms per layer at 32x32).
        chain = _elementwise_chain(model, act, len(wmax), inits) if len(split) else None
        if len(split):
            # Once the outlier channels go to fp32, smoothing the rest only moves error into the
            # down-projection's weight rows (stand-in STS: -0.18 smoothed, -0.05 not; min cosine
            # 0.99846 vs 0.99922). The Gather fallback still needs its Mul: zeros at ``split``.
            s = np.ones(len(wmax), dtype=np.float32)
        else:
            s = np.power(np.maximum(amax[act], 1e-5), alpha) / np.power(np.maximum(wmax, 1e-5), 1 - alpha)
            s = np.clip(s, 1e-4, 1e4).astype(np.float32)
        inv = (1.0 / s).astype(np.float32)
        inv[split] = 0.0
        for name, w in weights.items():
            scaled = (w * s[:, None]).astype(np.float32)
            scaled[split] = 0.0  # those rows live in the fp32 path; keep them out of the int8 scales
            inits[name].CopyFrom(numpy_helper.from_array(scaled[keep] if chain else scaled, name))
        extra = []
        smoothed = act
        if chain is None:  # the column path leaves the int8 input as it is: no Mul at all
            inv_name, smoothed = act + "_smooth_inv", act + "_smoothed"
            model.graph.initializer.append(numpy_helper.from_array(inv, inv_name))
            extra.append(helper.make_node("Mul", [act, inv_name], [smoothed], name=smoothed))
        picked = act + "_outliers"
        if chain:
            column_splits.append((act, *chain, split, keep))
            picked = act + "_outlier_cols"
        elif len(split):  # fallback: pick the channels out of the full activation
            idx_name = act + "_outlier_idx"
            model.graph.initializer.append(numpy_helper.from_array(split.astype(np.int64), idx_name))
            extra.append(helper.make_node("Gather", [act, idx_name], [picked], name=picked, axis=-1))
        for n in nodes:
            n.input[0] = smoothed
            if len(split):
                w_name = n.input[1] + "_outlier_rows"
                model.graph.initializer.append(numpy_helper.from_array(weights[n.input[1]][split].astype(np.float32), w_name))
                # Merge after the bias Add, so MatMul -> Add(bias) stays adjacent for ORT's fusions.
                target = bias_add.get(n.output[0], n)
                out, part, side = target.output[0], target.output[0] + "_int8part", n.output[0] + OUTLIER_SUFFIX
                target.output[0] = part
                extra.append(helper.make_node("MatMul", [picked, w_name], [side], name=n.name + OUTLIER_SUFFIX))
                post_adds.append((target.name, helper.make_node("Add", [part, side], [out], name=n.name + "_merge")))
        new_nodes[act] = extra
    # After all smoothing, so the clones read the smoothed input and row-scaled columns.
    for act, up, chain, split, keep in column_splits:
        clones, consts = _column_split_path(up, chain, split, keep, inits)
        model.graph.initializer.extend(consts)
        new_nodes[act][:0] = clones
    # Insert each group's new nodes right before its first MatMul (keeps the graph sorted).
    group_of = {id(n): act for act, nodes in groups.items() for n in nodes}
    ordered = []
    placed = set()
    for node in model.graph.node:
        act = group_of.get(id(node))
        if act is not None and act not in placed:
            ordered.extend(new_nodes[act])
            placed.add(act)
        ordered.append(node)
        ordered.extend(add for name, add in post_adds if name == node.name)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    read = _names_read(model.graph)
    unused = [i for i in model.graph.initializer if i.name not in read]  # replaced by sliced copies
    for init in unused:
        model.graph.initializer.remove(init)
    onnx.save(model, str(out_path))
    return {
        "alpha": alpha,
        "patterns": list(patterns),
        "groups": len(groups),
        "outlier_channels_requested": outliers,
        # What was applied: per split group, capped at an eighth of its channels.
        "outlier_channels_fp32": sorted(set(applied)),
        "outlier_split_groups": len(applied),
        "outlier_split_on": "down-projections (K > N), which are then not smoothed",
        "outlier_paths": {"up-projection columns": len(column_splits), "gather": sum(
            1 for a, ns in groups.items() if a in new_nodes and any(n.op_type == "Gather" for n in new_nodes[a]))},
        "max_outlier_ratio": round(max(ratios), 1) if ratios else None,
    }
