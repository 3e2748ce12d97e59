"""The fp16 variant of an fp32 export: the image encoder in float16, the interface and scoring head in float32.

Used by ``python -m export.onnx --fp16`` and by ``python -m export.tensorrt --fp16`` for TensorRT
>= 11, whose strongly typed networks take their precision from the ONNX file.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from taidpt.export.errors import ExportError
from taidpt.export.onnx_files import save_model, write_props
from taidpt.serve.metadata import ModelMetadata


def _toposort(model: Any) -> None:
    """Reorder graph nodes topologically in place (stable; the fp16 converter appends input casts last)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            raise ExportError(f"graph has a cycle or a dangling input near node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


ENCODER_SCOPE = "/encoder/"


def _is_half_region(node: Any) -> bool:
    """Nodes of the image encoder (the TorchScript exporter names nodes by module path)."""
    return node.name.startswith(ENCODER_SCOPE)


def fold_initializer_identities(graph: Any) -> None:
    """Drop ``Identity(initializer)`` nodes (the exporter's shared-weight aliases), rewiring consumers,
    so that every consumer of a weight reads the initializer itself (fp16 and int8 conversion alike)."""
    inits = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(kept)


def convert_to_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write a half-precision copy of an fp32 export.

    The image encoder (every node under ``/encoder/``, its weights and constants) runs in float16.
    The input ``images`` and the three outputs stay float32 (the export contract), and so does the
    small scoring head after the encoder (L2 normalisation, cosine similarities, spatial softmax,
    merge): its sums of squares could overflow float16 and it costs next to nothing. Exactly one
    Cast is placed on each float tensor that crosses between the two regions. (onnxruntime's
    ``float16`` converter with a block list instead casts every head intermediate back to float16
    and duplicates Casts, so it is not used.)
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    fold_initializer_identities(graph)
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input,
                                                             *inferred.graph.output)}
    elem.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    elem[node.output[0]] = a.t.data_type

    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    # Unscoped float Constants (e.g. "Constant_12") join the encoder when only the encoder reads them.
    half_nodes = {id(n) for n in graph.node if _is_half_region(n)}
    for node in graph.node:
        if node.op_type == "Constant" and not node.name.startswith("/"):
            users = consumers.get(node.output[0], [])
            if users and all(id(u) in half_nodes for u in users):
                half_nodes.add(id(node))
    producer_half = {o: id(n) in half_nodes for n in graph.node for o in n.output}

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    # Weights: convert those only the encoder reads; copy those both regions read.
    new_inits = []
    for init in graph.initializer:
        if init.data_type != FLOAT:
            continue
        users = consumers.get(init.name, [])
        half_users = [u for u in users if id(u) in half_nodes]
        if not half_users:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name)
        if len(half_users) == len(users):
            init.CopyFrom(half)
        else:
            half.name = init.name + "_fp16"
            new_inits.append(half)
            for u in half_users:
                for i, name in enumerate(u.input):
                    if name == init.name:
                        u.input[i] = half.name
    graph.initializer.extend(new_inits)

    # Types fixed inside the encoder: float Constants, ConstantOfShape values, Cast targets.
    for node in graph.node:
        if id(node) not in half_nodes:
            continue
        for a in node.attribute:
            if node.op_type in ("Constant", "ConstantOfShape") and a.name == "value" and a.t.data_type == FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            elif node.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                a.i = HALF

    # One Cast per float tensor crossing between regions (graph input/outputs count as float32).
    inits = {t.name for t in graph.initializer}
    casts: dict[tuple[str, int], str] = {}
    new_nodes = []

    def crossing(name: str, to_half: bool) -> str:
        key = (name, HALF if to_half else FLOAT)
        if key not in casts:
            out = f"{name}_to_{'fp16' if to_half else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], name=f"{out}_cast", to=key[1]))
            casts[key] = out
        return casts[key]

    for node in graph.node:
        node_half = id(node) in half_nodes
        for i, name in enumerate(node.input):
            if not name or name in inits or elem.get(name) != FLOAT:
                continue
            src_half = producer_half.get(name, False)  # graph inputs are float32
            if src_half != node_half:
                node.input[i] = crossing(name, node_half)
    for out in graph.output:
        if producer_half.get(out.name, False) and elem.get(out.name) == FLOAT:
            raise ExportError(f"fp16 conversion: output {out.name} is produced inside the encoder")
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    _toposort(model)
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, src).replace(precision="fp16")
    write_props(model, meta)
    save_model(model, dst)
