"""The CenterFace graph as an inference server serves it: uint8 BGR frames in, named float maps out.

A client then sends each network input as the bytes it already has (NHWC BGR uint8, H and W padded to multiples of
32): a quarter of the float32 tensor's size on the wire, with the cast, the BGR->RGB swap and the NHWC->NCHW
transpose done on the server, next to the network. Both the model repository generator (models.triton_repo) and
the Triton client (models.triton) use the names and shapes below; they are the contract between them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .centerface import prepare_graph

INPUT = "image"  # UINT8 [batch, height, width, 3], BGR, height and width multiples of centerface.ALIGN
OUTPUTS = ("heatmap", "scale", "offset", "landmarks")  # FP32 [batch, C, height/4, width/4], C = 1, 2, 2, 10
OUTPUT_CHANNELS = (1, 2, 2, 10)


def serving_graph(path: Path) -> bytes:
    """The prepared CenterFace graph (folded weights, symbolic batch/height/width) behind a uint8 NHWC BGR input,
    with its outputs named ``OUTPUTS``."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(prepare_graph(path))
    graph = model.graph
    network_input = graph.input[0].name
    old_outputs = [out.name for out in graph.output]
    renamed = dict(zip(old_outputs, OUTPUTS, strict=True))
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in renamed:
                node.output[i] = renamed[name]
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for out in graph.output:
        out.name = renamed[out.name]
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", "height", "width", 3]))
    graph.initializer.append(helper.make_tensor("bgr_to_rgb", TensorProto.INT64, [3], [2, 1, 0]))
    # This order is measured: a Gather over the last (channel) axis of NHWC costs ONNX Runtime ~8 ms for a 640x480
    # frame on one core; transposing the bytes first and swapping channels over NCHW's axis 1 costs ~0.6 ms.
    front = [
        helper.make_node("Transpose", [INPUT], ["image_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["image_nchw"], ["image_float"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["image_float", "bgr_to_rgb"], [network_input], axis=1),
    ]
    nodes = _topological(front + list(graph.node), {init.name for init in graph.initializer} | {INPUT})
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]  # BatchNorm counters: noise in logs
    for init in unused:
        graph.initializer.remove(init)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _topological(nodes: list[Any], available: set[str]) -> list[Any]:
    """``nodes`` with every node after the producers of its inputs. The fp16 variant (models.quantize) lists its
    input casts after their consumers, which ONNX Runtime accepts and the ONNX checker (and Triton) do not."""
    done: list[Any] = []
    ready = set(available) | {""}  # "" is an omitted optional input
    pending = list(nodes)
    while pending:
        left = []
        for node in pending:
            if set(node.input) <= ready:
                done.append(node)
                ready.update(node.output)
            else:
                left.append(node)
        if len(left) == len(pending):
            raise ValueError(f"the graph has a cycle or a missing input at {left[0].name or left[0].op_type}")
        pending = left
    return done
