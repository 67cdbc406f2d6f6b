"""Fold quantized activations in an ONNX graph into one ``ai.snncompile.QuantReLU`` node.

The IR's quantized activation (``Activation(hi=λ, levels=L, shift=s)``) is

    y = λ · clip(floor(x · L/λ + s) / L, 0, 1)  =  (λ/L) · clip(floor(x · L/λ + s), 0, L).

Two ONNX spellings of it are recognised and replaced by one node
``QuantReLU(x) {levels=L, hi=λ, shift=s}`` in the domain ``ai.snncompile`` (the converter at
the end of this module turns that node into ``ReLU(act=Activation(...))``):

1. **Clip-floor-shift chains** (QCFS; ``snncompile.qat.QuantReLU`` exported by
   ``torch.onnx.export(..., dynamo=False)`` at opsets 13-20 emits exactly
   ``Div(x, λ) → Mul(·, L) → Add(·, 0.5) → Floor → Div(·, L) → Clip(·, 0, 1) → Mul(·, λ)``).
   The matcher is not tied to that sequence: it works by algebra, not spelling. Around a
   ``Floor`` (or ``Round``, read as floor(u + 0.5); ONNX rounds exact halves to even, the only
   point where the two differ) it composes the single-input elementwise ops whose other operand
   is a scalar constant (an initializer, a ``Constant``, or arithmetic on them such as the
   ``Reciprocal``/``Div`` of a trainable λ computed in ``forward``):

   - before: ``Mul``, ``Div`` (x / c), ``Add``, ``Sub`` and the clips ``Clip``, ``Relu``,
     ``Max``/``Min`` with a constant, giving u = e·clip(c·x + d, lo, hi) + f. Floor is monotone,
     so floor(clip(w, l, h)) = clip(floor(w), floor(l), floor(h)): a clip before the Floor
     (the QCFS paper's ``floor(clamp(x/λ, 0, 1)·L + 0.5)/L·λ``, Fast-SNN's
     ``round(clamp(x/α, 0, 1)·L)·α/L``) is a clip of the integer k = floor(a·x + b) with
     a = e·c, b = e·d + f;
   - after: the same affine ops and clips, giving g(k) = e · clip(c·k + d, lo, hi) + f
     (e, c > 0), the ``/L·λ`` tail in either order.

   With k0 = (lo − d)/c, k1 = (hi − d)/c, step = e·c the chain is y = step · clip(k, k0, k1)
   for integer k; it is the IR activation when k0 is an integer, L = k1 − k0 is an integer ≥ 1,
   e·lo + f = 0 (the lowest level is 0) and a · step = 1 (the input scale is the inverse of
   the output step, as in every QCFS layer). Then λ = step·L and s = b − k0. Longest chains
   are tried first, and shorter ones when a longer one does not satisfy these conditions (e.g.
   a scalar ``Mul`` of the layer before). A ``Relu`` right before the chain is folded too when
   0 ≤ s < 1 (it changes nothing then: for x < 0, floor(a·x + s) ≤ 0). A straight-through
   estimator written ``t + (floor(t) − t).detach()`` exports as ``Add(t, Sub(Floor(t), t))``
   and is first rewritten to ``Floor(t)``.

2. **QuantizeLinear → DequantizeLinear around a Relu** (``Relu → Q → DQ`` or ``Q → DQ → Relu``)
   with one per-tensor scale σ > 0 and zero point z shared by Q and DQ, integer range
   [qmin, qmax] of the zero point's type: y = σ · clip(round(x/σ), max(0, qmin − z), qmax − z),
   so L = qmax − z, λ = σ·L, s = 0.5 (round-half-to-even vs floor(u + 0.5): exact halves only).
   Needs qmin − z ≤ 0 (else the lowest output is not 0).

Candidates that do not fold (a ``Floor``/``Round``/``QuantizeLinear`` left alone) get a warning
saying why; the frontend then reports the leftover op as unsupported.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from snncompile.frontend.op_table import Builder, OnnxNode, Unsupported, converts
from snncompile.ir.diagnostics import Diagnostic
from snncompile.ir.nodes import Activation, ReLU

DOMAIN = "ai.snncompile"
OP_TYPE = "QuantReLU"
#: how ``onnx_import`` spells the op type of a node outside the default domain
QUALIFIED = f"{DOMAIN}.{OP_TYPE}"

log = logging.getLogger("snncompile")

#: integer range of QuantizeLinear's output type
_QRANGE: dict[int, tuple[int, int]] = {
    onnx.TensorProto.UINT8: (0, 255), onnx.TensorProto.INT8: (-128, 127),
    onnx.TensorProto.UINT16: (0, 65535), onnx.TensorProto.INT16: (-32768, 32767),
}
for _name, _rng in (("UINT4", (0, 15)), ("INT4", (-8, 7))):  # onnx >= 1.16
    if hasattr(onnx.TensorProto, _name):
        _QRANGE[getattr(onnx.TensorProto, _name)] = _rng

_REL = 1e-5  # relative tolerance for "a · step = 1" and "k0, L are integers"


# ---------------------------------------------------------------------------- graph view
class _View:
    """Producers, consumers and scalar constants of an ONNX graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for o in n.output:
                if o:
                    self.producer[o] = i
            for t in n.input:
                if t:
                    self.consumers.setdefault(t, []).append(i)
        self.outputs = {o.name for o in graph.output}
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i)
                                              for i in graph.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                v = _constant_value(n)
                if v is not None:
                    self.consts[n.output[0]] = v
            elif n.domain in ("", "ai.onnx") and n.op_type in _ARITH and n.input \
                    and all(t in self.consts for t in n.input if t):
                # arithmetic on constants, e.g. 1/λ of a trainable λ computed in forward()
                self.consts[n.output[0]] = _ARITH[n.op_type](*(self.consts[t] for t in n.input))

    def scalar(self, name: str) -> float | None:
        v = self.consts.get(name)
        if v is None or v.size != 1 or v.ndim > 1 or v.dtype.kind not in "fiu":
            return None
        return float(v.reshape(()))

    def internal(self, tensor: str) -> bool:
        """``tensor`` may disappear into a fused node: one reader and not a graph output."""
        return tensor not in self.outputs and len(self.consumers.get(tensor, [])) == 1

    def only_user(self, tensor: str) -> onnx.NodeProto | None:
        return self.nodes[self.consumers[tensor][0]] if self.internal(tensor) else None

    def maker(self, tensor: str) -> onnx.NodeProto | None:
        i = self.producer.get(tensor)
        return None if i is None else self.nodes[i]


#: elementwise arithmetic evaluated on constants (numpy broadcasting = ONNX broadcasting)
_ARITH = {
    "Reciprocal": lambda a: np.reciprocal(a), "Neg": lambda a: -a, "Identity": lambda a: a,
    "Mul": lambda a, b: a * b, "Div": lambda a, b: a / b, "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
}


def _constant_value(n: onnx.NodeProto) -> np.ndarray | None:
    for a in n.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.array(helper.get_attribute_value(a))
        if a.name in ("value_floats", "value_ints"):
            return np.array(list(helper.get_attribute_value(a)))
    return None


def _default_domain(n: onnx.NodeProto) -> bool:
    return n.domain in ("", "ai.onnx")


def _affine(n: onnx.NodeProto, v: _View) -> tuple[str, float, float] | None:
    """``n`` as out = p·x + q with x its one activation input: (x, p, q), else None."""
    if not _default_domain(n) or n.op_type not in ("Mul", "Div", "Add", "Sub") \
            or len(n.input) != 2:
        return None
    c0, c1 = v.scalar(n.input[0]), v.scalar(n.input[1])
    if (c0 is None) == (c1 is None):
        return None
    x, c, const_first = (n.input[1], c0, True) if c0 is not None else (n.input[0], c1, False)
    assert c is not None
    if n.op_type == "Mul":
        return x, c, 0.0
    if n.op_type == "Add":
        return x, 1.0, c
    if n.op_type == "Sub":
        return (x, -1.0, c) if const_first else (x, 1.0, -c)
    if const_first or c == 0.0:  # c / x is not affine
        return None
    return x, 1.0 / c, 0.0


def _clip(n: onnx.NodeProto, v: _View) -> tuple[str, float, float] | None:
    """``n`` as out = clip(x, lo, hi): (x, lo, hi), else None."""
    if not _default_domain(n):
        return None
    if n.op_type == "Relu":
        return n.input[0], 0.0, math.inf
    if n.op_type == "Clip":
        def bound(i: int, attr: str, default: float) -> float | None:
            if len(n.input) > i and n.input[i]:
                return v.scalar(n.input[i])
            for a in n.attribute:
                if a.name == attr:
                    return float(a.f)
            return default

        lo, hi = bound(1, "min", -math.inf), bound(2, "max", math.inf)
        if lo is None or hi is None:
            return None
        return n.input[0], lo, hi
    if n.op_type in ("Max", "Min") and len(n.input) == 2:
        c0, c1 = v.scalar(n.input[0]), v.scalar(n.input[1])
        if (c0 is None) == (c1 is None):
            return None
        x, c = (n.input[1], c0) if c0 is not None else (n.input[0], c1)
        assert c is not None
        return (x, c, math.inf) if n.op_type == "Max" else (x, -math.inf, c)
    return None


# ---------------------------------------------------------------------------- matching
@dataclass(frozen=True)
class Match:
    """One folded activation: the ONNX nodes it replaces and the IR parameters."""

    nodes: tuple[int, ...]  # indices into graph.node, in graph order
    x: str  # input tensor
    y: str  # output tensor
    levels: int
    hi: float
    shift: float


@dataclass(frozen=True)
class _Post:
    """g(k) = e · clip(c·k + d, lo, hi) + f after some nodes following the Floor."""

    c: float = 1.0
    d: float = 0.0
    lo: float = -math.inf
    hi: float = math.inf
    e: float = 1.0
    f: float = 0.0

    def then_affine(self, p: float, q: float) -> _Post:
        if math.isinf(self.lo) and math.isinf(self.hi):  # no clip yet: stay inside
            return _Post(p * self.c, p * self.d + q, self.lo, self.hi, 1.0, 0.0) \
                if self.e == 1.0 and self.f == 0.0 else \
                _Post(self.c, self.d, self.lo, self.hi, p * self.e, p * self.f + q)
        return _Post(self.c, self.d, self.lo, self.hi, p * self.e, p * self.f + q)

    def then_clip(self, lo: float, hi: float) -> _Post | None:
        if self.e <= 0:
            return None  # a clip after a sign flip is not of our form
        return _Post(self.c, self.d, max(self.lo, (lo - self.f) / self.e),
                     min(self.hi, (hi - self.f) / self.e), self.e, self.f)


def _near_int(x: float) -> bool:
    return math.isfinite(x) and abs(x - round(x)) <= _REL * max(1.0, abs(x))


def _solve(a: float, b: float, post: _Post) -> tuple[int, float, float] | str:
    """(L, λ, s) when floor(a·x + b) followed by ``post`` is the IR activation, else why not."""
    if not a > 0:
        return f"the scale before Floor is {a:g}; needs > 0"
    if not post.c > 0 or not post.e > 0:
        return "the ops after Floor flip the sign"
    if math.isinf(post.lo) or math.isinf(post.hi):
        return "no lower and upper clip after Floor (an unbounded quantizer)"
    k0 = (post.lo - post.d) / post.c
    k1 = (post.hi - post.d) / post.c
    step = post.e * post.c
    if not _near_int(k0) or not _near_int(k1 - k0) or round(k1 - k0) < 1:
        return f"the clip after Floor spans levels {k0:g}..{k1:g}; needs integers, at least 1 apart"
    levels = int(round(k1 - k0))
    if abs(post.e * post.lo + post.f) > _REL * step * levels:
        return f"the lowest output is {post.e * post.lo + post.f:g}; needs 0"
    if abs(a * step - 1.0) > _REL:
        return (f"the scale before Floor ({a:g}) is not the inverse of the step after it "
                f"({step:g})")
    return levels, step * levels, b - round(k0)


def _floor_tol(u: float) -> float:
    """floor(u), reading a value within rounding error of an integer as that integer."""
    if math.isinf(u):
        return u
    return float(round(u)) if _near_int(u) else float(math.floor(u))


def _pre_chain(ops: list[onnx.NodeProto], v: _View, b0: float) -> tuple[float, float, _Post] | None:
    """The ops before Floor (graph order) as floor(u) = clip(floor(a·x + b), k_lo, k_hi).

    The ops compose to u = e·clip(c·x + d, lo, hi) + f + b0 (b0 = 0.5 for Round). Floor is
    monotone, so floor(clip(w, l, h)) = clip(floor(w), floor(l), floor(h)): a clip *before*
    the Floor (``floor(clamp(x/λ, 0, 1)·L + 0.5)``) is the same as one after it, in levels.
    Returns (a, b, the state after Floor holding that clip), or None (a sign flip before a clip).
    """
    st: _Post | None = _Post()
    for n in ops:
        af, cl = _affine(n, v), _clip(n, v)
        st = st.then_affine(af[1], af[2]) if af else st.then_clip(cl[1], cl[2])  # type: ignore[index,union-attr]
        if st is None:
            return None
    assert st is not None
    a, b = st.e * st.c, st.e * st.d + st.f + b0
    if math.isinf(st.lo) and math.isinf(st.hi):
        return a, b, _Post()
    lo, hi = st.e * st.lo + st.f + b0, st.e * st.hi + st.f + b0
    return a, b, _Post(lo=_floor_tol(lo), hi=_floor_tol(hi))


def _post_chain(start: _Post, ops: list[onnx.NodeProto], v: _View, cur: str) -> _Post | None:
    st: _Post | None = start
    for n in ops:
        af, cl = _affine(n, v), _clip(n, v)
        if af and af[0] == cur:
            st = st.then_affine(af[1], af[2])  # type: ignore[union-attr]
        elif cl and cl[0] == cur:
            st = st.then_clip(cl[1], cl[2])  # type: ignore[union-attr]
        else:
            return None
        if st is None:
            return None
        cur = n.output[0]
    return st


def _match_floor(i: int, v: _View) -> Match | str:
    fl = v.nodes[i]
    if fl.op_type == "Round" and len(fl.input) == 1:
        b0 = 0.5
    elif fl.op_type == "Floor" and len(fl.input) == 1:
        b0 = 0.0
    else:
        return "not a one-input Floor/Round"
    # walk back over scalar affine ops and clips (Clip, Relu, Min/Max with a constant)
    back: list[tuple[int, onnx.NodeProto, str]] = []  # (index, node, its activation input)
    cur = fl.input[0]
    while v.internal(cur) and (m := v.maker(cur)) is not None:
        af, cl = _affine(m, v), _clip(m, v)
        x = af[0] if af else cl[0] if cl else None
        if x is None:
            break
        back.append((v.producer[cur], m, x))
        cur = x
    pres: list[tuple[tuple[int, ...], str, float, float, _Post]] = []
    for n_pre in range(len(back) + 1):
        chain = back[:n_pre][::-1]
        pre = _pre_chain([m for _, m, _ in chain], v, b0)
        if pre is None:
            break  # a longer prefix has the same problem
        x = chain[0][2] if chain else fl.input[0]
        pres.append((tuple(j for j, _, _ in chain), x, *pre))
    # walk forward: the ops after Floor
    after: list[tuple[int, onnx.NodeProto]] = []
    cur = fl.output[0]
    while (n := v.only_user(cur)) is not None and ((af := _affine(n, v)) and af[0] == cur
                                                   or (cl := _clip(n, v)) and cl[0] == cur):
        after.append((v.consumers[cur][0], n))
        cur = n.output[0]
    why = "no clip after Floor"
    combos = sorted(((p, q) for p in pres for q in range(len(after) + 1)),
                    key=lambda pq: -len(pq[0][0]) - pq[1])
    for (pre_idx, x, a, b, start), n_post in combos:
        post = _post_chain(start, [n for _, n in after[:n_post]], v, fl.output[0])
        if post is None:
            continue
        sol = _solve(a, b, post)
        if isinstance(sol, str):
            if why == "no clip after Floor":
                why = sol  # the longest candidate's reason
            continue
        levels, hi, shift = sol
        y = after[n_post - 1][1].output[0] if n_post else fl.output[0]
        nodes = (*pre_idx, i, *(j for j, _ in after[:n_post]))
        # a Relu right before the chain changes nothing when 0 <= s < 1: absorb it
        r = v.maker(x)
        if r is not None and r.op_type == "Relu" and _default_domain(r) and v.internal(x) \
                and 0.0 <= shift < 1.0:
            nodes, x = (v.producer[x], *nodes), r.input[0]
        return Match(tuple(sorted(nodes)), x, y, levels, hi, shift)
    return why


def _qdq_range(q: onnx.NodeProto, v: _View) -> tuple[int, int] | None:
    if len(q.input) > 2 and q.input[2]:
        zp = v.consts.get(q.input[2])
        if zp is None:
            return None
        elem = helper.np_dtype_to_tensor_dtype(zp.dtype)
    else:
        elem = next((a.i for a in q.attribute if a.name == "output_dtype"), 0) \
            or onnx.TensorProto.UINT8
    return _QRANGE.get(elem)


def _match_qdq(i: int, v: _View) -> Match | str:
    q = v.nodes[i]
    dq = v.only_user(q.output[0])
    if dq is None or dq.op_type != "DequantizeLinear" or not _default_domain(dq) \
            or dq.input[0] != q.output[0]:
        return "not followed by its only reader DequantizeLinear"
    sq = v.consts.get(q.input[1]) if len(q.input) > 1 else None
    sd = v.consts.get(dq.input[1]) if len(dq.input) > 1 else None
    if sq is None or sd is None or sq.size != 1 or sd.size != 1:
        return "needs one constant per-tensor scale (per-channel scales are not supported)"
    zq = v.consts.get(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros(1)
    zd = v.consts.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros(1)
    if zq is None or zd is None or zq.size != 1 or zd.size != 1:
        return "needs one constant per-tensor zero point"
    scale, z = float(sq.reshape(())), int(np.asarray(zq).reshape(()))
    if float(sd.reshape(())) != scale or int(np.asarray(zd).reshape(())) != z or not scale > 0:
        return "QuantizeLinear and DequantizeLinear differ in scale or zero point"
    rng = _qdq_range(q, v)
    if rng is None:
        return "unknown quantized type"
    qmin, qmax = rng
    levels = qmax - z
    if qmin - z > 0 or levels < 1:
        return f"zero point {z} in [{qmin}, {qmax}] does not make 0 the lowest level"
    idx = [v.producer[q.output[0]], v.consumers[q.output[0]][0]]
    x, y = q.input[0], dq.output[0]
    r = v.maker(x)
    after = v.only_user(y)
    if r is not None and r.op_type == "Relu" and _default_domain(r) and v.internal(x):
        idx.insert(0, v.producer[x])
        x = r.input[0]
    elif after is not None and after.op_type == "Relu" and _default_domain(after):
        idx.append(v.consumers[y][0])
        y = after.output[0]
    else:
        return "QuantizeLinear/DequantizeLinear not next to a Relu"
    return Match(tuple(sorted(idx)), x, y, levels, scale * levels, 0.5)


# ---------------------------------------------------------------------------- rewrite
def _drop_straight_through(model: onnx.ModelProto) -> onnx.ModelProto:
    """``t + (floor(t) − t)`` (a straight-through estimator, ``(…).detach()`` exported as a
    no-op) -> ``floor(t)``; the same for Round. Exact: floor(t) − t is exact in floating point
    for t ≥ 0 (Sterbenz), and then so is the sum; for t < 0 it may differ by one rounding, where
    the quantizer's lower clip maps both to 0 anyway."""
    v = _View(model.graph)
    drop: set[int] = set()
    rename: dict[str, str] = {}
    for i, add in enumerate(v.nodes):
        if add.op_type != "Add" or not _default_domain(add) or len(add.input) != 2 \
                or add.output[0] in v.outputs:
            continue
        for t, d in (add.input, add.input[::-1]):
            sub = v.maker(d)
            if sub is None or sub.op_type != "Sub" or not _default_domain(sub) \
                    or sub.input[1] != t or not v.internal(d):
                continue
            fl = v.maker(sub.input[0])
            if fl is not None and fl.op_type in ("Floor", "Round") and _default_domain(fl) \
                    and fl.input[0] == t:
                drop.update((v.producer[d], i))
                rename[add.output[0]] = sub.input[0]
                break
    if not drop:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for j, n in enumerate(v.nodes):
        if j in drop:
            continue
        m = onnx.NodeProto()
        m.CopyFrom(n)
        for k, t in enumerate(m.input):
            while t in rename:
                t = rename[t]
            m.input[k] = t
        out.graph.node.append(m)
    return out


def find_quantized_activations(model: onnx.ModelProto) -> tuple[list[Match], list[Diagnostic]]:
    """Every foldable quantized activation in ``model`` (non-overlapping, graph order), and a
    warning for each Floor/Round/QuantizeLinear that does not fold."""
    v = _View(model.graph)
    matches: list[Match] = []
    warnings: list[Diagnostic] = []
    taken: set[int] = set()
    for i, n in enumerate(v.nodes):
        if not _default_domain(n) or i in taken:
            continue
        if n.op_type in ("Floor", "Round"):
            m = _match_floor(i, v)
        elif n.op_type == "QuantizeLinear":
            m = _match_qdq(i, v)
        else:
            continue
        if isinstance(m, str) or taken.intersection(m.nodes):
            why = m if isinstance(m, str) else "overlaps another quantized activation"
            warnings.append(Diagnostic(f"{n.op_type} not folded into a quantized activation: {why}",
                                       origin=f"{n.name or n.op_type + '_' + str(i)} ({n.op_type})",
                                       severity="warning"))
            continue
        matches.append(m)
        taken.update(m.nodes)
    return matches, warnings


def fold_quantized_activations(model: onnx.ModelProto,
                               notes: list[Diagnostic] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` with every quantized activation as one ``ai.snncompile.QuantReLU``.

    Args:
        model: the ONNX model (not modified).
        notes: if given, receives a warning for each candidate that did not fold (also logged).

    Returns:
        ``model`` itself when nothing folds, else a new model. Initializers and ``Constant``
        nodes that only the folded nodes read are dropped.
    """
    model = _drop_straight_through(model)
    matches, warnings = find_quantized_activations(model)
    for w in warnings:
        log.warning("%s", w)
    if notes is not None:
        notes.extend(warnings)
    if not matches:
        return model
    old = list(model.graph.node)
    removed: set[int] = set()
    fused: dict[int, onnx.NodeProto] = {}  # position (last replaced node) -> new node
    for m in matches:
        names = [old[j].name or old[j].op_type for j in m.nodes]
        node = helper.make_node(
            OP_TYPE, [m.x], [m.y], name=f"QuantReLU[{names[0]}..{names[-1]}]", domain=DOMAIN,
            doc_string="folded: " + ", ".join(f"{old[j].name} ({old[j].op_type})" for j in m.nodes),
            levels=m.levels, hi=float(m.hi), shift=float(m.shift))
        removed.update(m.nodes)
        fused[m.nodes[-1]] = node
    new_nodes = [fused[j] if j in fused else n for j, n in enumerate(old) if j not in removed
                 or j in fused]
    dropped_inputs = {t for j in removed for t in old[j].input if t}
    used = {t for n in new_nodes for t in n.input} | {o.name for o in model.graph.output}
    new_nodes = [n for n in new_nodes if not (
        n.op_type == "Constant" and _default_domain(n) and n.output[0] in dropped_inputs
        and n.output[0] not in used)]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    dead = {t for t in dropped_inputs if t not in used}
    keep_init = [i for i in out.graph.initializer if i.name not in dead]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep_init)
    keep_in = [i for i in out.graph.input if i.name not in dead]
    del out.graph.input[:]
    out.graph.input.extend(keep_in)
    produced = {o for n in new_nodes for o in n.output}
    keep_vi = [vi for vi in out.graph.value_info if vi.name in produced]
    del out.graph.value_info[:]
    out.graph.value_info.extend(keep_vi)
    if not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return out


# ---------------------------------------------------------------------------- IR mapping
@converts(QUALIFIED)
def quant_relu(node: OnnxNode, b: Builder) -> str:
    """ai.snncompile.QuantReLU{levels, hi, shift} -> ReLU(act=Activation(hi, levels, shift))."""
    levels, hi = node.attr("levels"), node.attr("hi")
    if levels is None or hi is None:
        raise Unsupported("needs the attributes levels and hi")
    if int(levels) < 1 or not (math.isfinite(float(hi)) and float(hi) > 0):
        raise Unsupported(f"levels={levels}, hi={hi}; needs levels >= 1 and a finite hi > 0")
    act = Activation(hi=float(hi), levels=int(levels), shift=float(node.attr("shift", 0.5)))
    return b.add(node, ReLU(origin=node.origin, act=act), [b.tensor(node.inputs[0])])
