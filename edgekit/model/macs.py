"""Multiply-accumulates per operator, counted from tensor shapes (never estimated).

One formula per op kind, in a table. TFLite layouts:
  CONV_2D            input [N,H,W,Ci]  filter [Co,Kh,Kw,Ci/g]   output [N,Ho,Wo,Co]
                     MACs = N*Ho*Wo*Co * Kh*Kw*(Ci/g)
  DEPTHWISE_CONV_2D  filter [1,Kh,Kw,Co]                          MACs = N*Ho*Wo*Co * Kh*Kw
  FULLY_CONNECTED    weights [O,I]; rows = output elements / O     MACs = rows*O*I
  TRANSPOSE_CONV     filter [Co,Kh,Kw,Ci], input [N,H,W,Ci]        MACs = N*H*W*Ci * Kh*Kw*Co
  BATCH_MATMUL       A [...,M,K] x B [...,K,N]                     MACs = output elements * K
  UNIDIRECTIONAL_SEQUENCE_LSTM  per time step, every input-to-gate and recurrent-to-gate weight
                     matrix is multiplied once:                    MACs = steps*batch * sum(weights)
  SVDF               feature weights [F,I] and time weights [F,T]: MACs = batch*(F*I + F*T)
Elementwise ops, pooling and activations count 0 MACs (they have no multiply-accumulate core).
"""
from __future__ import annotations

from typing import Callable

from edgekit.model.graph import Operator, Subgraph


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 0)
    return n


def _t(sg: Subgraph, op: Operator, k: int):
    if k >= len(op.inputs) or op.inputs[k] < 0:
        return None
    return sg.tensors[op.inputs[k]]


def _out(sg: Subgraph, op: Operator, k: int = 0):
    if k >= len(op.outputs) or op.outputs[k] < 0:
        return None
    return sg.tensors[op.outputs[k]]


def _conv(sg, op) -> int:
    w, o = _t(sg, op, 1), _out(sg, op)
    if w is None or o is None or len(w.shape) != 4:
        return 0
    return _prod(o.shape) * w.shape[1] * w.shape[2] * w.shape[3]


def _depthwise(sg, op) -> int:
    w, o = _t(sg, op, 1), _out(sg, op)
    if w is None or o is None or len(w.shape) != 4:
        return 0
    return _prod(o.shape) * w.shape[1] * w.shape[2]


def _fully_connected(sg, op) -> int:
    w, o = _t(sg, op, 1), _out(sg, op)
    if w is None or o is None or len(w.shape) != 2:
        return 0
    return _prod(o.shape) * w.shape[1]


def _transpose_conv(sg, op) -> int:
    w, x = _t(sg, op, 1), _t(sg, op, 2)
    if w is None or x is None or len(w.shape) != 4:
        return 0
    return _prod(x.shape) * w.shape[0] * w.shape[1] * w.shape[2]


def _batch_matmul(sg, op) -> int:
    a, o = _t(sg, op, 0), _out(sg, op)
    if a is None or o is None or len(a.shape) < 2:
        return 0
    adj_x = bool((op.options or {}).get("adj_x"))
    k = a.shape[-2] if adj_x else a.shape[-1]
    return _prod(o.shape) * k


def _lstm(sg, op) -> int:
    x = _t(sg, op, 0)
    if x is None or len(x.shape) < 2:
        return 0
    weights = [_t(sg, op, k) for k in range(1, 9)]       # 4 input-to-gate + 4 recurrent-to-gate
    per_step = sum(_prod(w.shape) for w in weights if w is not None)
    input_size = x.shape[-1] or 1
    steps_times_batch = _prod(x.shape) // input_size
    return steps_times_batch * per_step


def _svdf(sg, op) -> int:
    x, wf, wt = _t(sg, op, 0), _t(sg, op, 1), _t(sg, op, 2)
    if x is None or wf is None or wt is None or not x.shape:
        return 0
    batch = _prod(x.shape[:-1]) or 1
    return batch * (_prod(wf.shape) + _prod(wt.shape))


MAC_FORMULAS: dict[str, Callable[[Subgraph, Operator], int]] = {
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _depthwise,
    "FULLY_CONNECTED": _fully_connected,
    "TRANSPOSE_CONV": _transpose_conv,
    "BATCH_MATMUL": _batch_matmul,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": _lstm,
    "SVDF": _svdf,
}


def op_macs(sg: Subgraph, op: Operator) -> int:
    """MACs of one operator (0 for ops without a multiply-accumulate core)."""
    f = MAC_FORMULAS.get(op.op)
    return int(f(sg, op)) if f else 0
