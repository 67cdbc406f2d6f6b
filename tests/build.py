"""Hand-built IR graphs for the conversion and simulator tests (NIR's ``mock_*``).

``chain(Input(...), ("name", op), ...)`` builds a straight graph ending in Output; the other
helpers make seeded ops and small networks.
"""

from __future__ import annotations

import numpy as np

from snncompile.ir import (
    Activation,
    Add,
    AvgPool2d,
    Conv2d,
    Dense,
    Flatten,
    Graph,
    Input,
    MaxPool2d,
    Neuron,
    Node,
    Output,
)

RELU = Activation()


def chain(shape: tuple[int, ...], *ops: tuple[str, Node]) -> Graph:
    """input -> ops... -> output."""
    g = Graph()
    prev = g.add("input", Input(shape=shape))
    for name, op in ops:
        prev = g.add(name, op, [prev])
    g.add("output", Output(), [prev])
    return g


def conv(rng: np.random.Generator, c_in: int, c_out: int, k: int = 3, *, pad: int = 1,
         stride: int = 1, act: Activation | None = RELU, bias: bool = True) -> Conv2d:
    w = rng.normal(0, 1.0 / np.sqrt(c_in * k * k), (c_out, c_in, k, k)).astype(np.float32)
    b = rng.normal(0, 0.05, c_out).astype(np.float32) if bias else None
    return Conv2d(weight=w, bias=b, stride=(stride, stride), padding=(pad,) * 4, act=act)


def dense(rng: np.random.Generator, n_in: int, n_out: int, *,
          act: Activation | None = RELU) -> Dense:
    w = rng.normal(0, 1.0 / np.sqrt(n_in), (n_out, n_in)).astype(np.float32)
    return Dense(weight=w, bias=rng.normal(0, 0.05, n_out).astype(np.float32), act=act)


def if_layer(threshold: float, n: int = 1, alpha: float = 0.5, model: str = "if") -> Graph:
    """input (n,) -> identity Dense with a neuron -> readout identity Dense -> output: the spike
    counts of the first layer are the object of study."""
    eye = np.eye(n, dtype=np.float64)
    neuron = Neuron(model=model, threshold=np.full(n, threshold), alpha=alpha)
    return chain((n,), ("if", Dense(weight=eye, act=RELU, neuron=neuron)),
                 ("readout", Dense(weight=eye)))


def cnn(rng: np.random.Generator) -> Graph:
    """conv-relu, avgpool, conv-relu, maxpool, flatten, dense-relu, dense (ANN form, 1×8×8)."""
    return chain((1, 8, 8),
                 ("conv1", conv(rng, 1, 4)), ("pool1", AvgPool2d(kernel=(2, 2), stride=(2, 2))),
                 ("conv2", conv(rng, 4, 6)), ("pool2", MaxPool2d(kernel=(2, 2), stride=(2, 2))),
                 ("flat", Flatten()), ("fc1", dense(rng, 24, 12)),
                 ("fc2", dense(rng, 12, 10, act=None)))


def residual(rng: np.random.Generator) -> Graph:
    """stem conv-relu -> (conv-relu -> conv) + shortcut -> add-relu -> avgpool -> flatten ->
    dense; plus a 1×1 projection shortcut block (ANN form, 1×8×8)."""
    g = Graph()
    g.add("input", Input(shape=(1, 8, 8)))
    g.add("stem", conv(rng, 1, 4), ["input"])
    g.add("b1c1", conv(rng, 4, 4), ["stem"])
    g.add("b1c2", conv(rng, 4, 4, act=None), ["b1c1"])
    g.add("add1", Add(act=RELU), ["b1c2", "stem"])
    g.add("b2c1", conv(rng, 4, 6, stride=2), ["add1"])
    g.add("b2c2", conv(rng, 6, 6, act=None), ["b2c1"])
    g.add("proj", conv(rng, 4, 6, k=1, pad=0, stride=2, act=None), ["add1"])
    g.add("add2", Add(act=RELU), ["b2c2", "proj"])
    g.add("pool", AvgPool2d(kernel=(4, 4), stride=(4, 4)), ["add2"])
    g.add("flat", Flatten(), ["pool"])
    g.add("fc", dense(rng, 6, 10, act=None), ["flat"])
    g.add("output", Output(), ["fc"])
    return g
