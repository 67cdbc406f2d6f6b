"""What every backend shares (a neutral module: backends never import each other): the result
of running a compiled network on samples, which ``snncompile.tools.report`` reads, and the
checks every ``run`` starts with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snncompile.ir.graph import Graph


@dataclass
class SimResult:
    """What one run returns: the GPU simulator (float and loihi mode) and the Lava backend.

    Attributes:
        timesteps: T.
        predictions: (T, N) int64, argmax of the readout potential after each step t = 1..T
            (row t-1 is the prediction at t).
        output: (N, K) float, the readout potential after T steps.
        layer_spikes: spiking layer name -> (N,) float64, spikes per sample (all steps, all units;
            every GN member spike and every negative spike counts 1, a graded delta counts 1).
        layer_neurons: spiking layer name -> number of neurons (units of its output).
        synops: (N,) float64, synaptic operations per sample (spikes × fan-out, all layers).
        seconds: wall time of the run.
        device: the torch device it ran on.
        spike_trains: with ``record``: layer name -> (T, N, *shape) int8 spikes s(t) (not θ·s);
            float32 for graded models (sigma-delta).
        potentials: with ``record``: (T, N, K) readout potentials.
    """

    timesteps: int
    predictions: np.ndarray
    output: np.ndarray
    layer_spikes: dict[str, np.ndarray]
    layer_neurons: dict[str, int]
    synops: np.ndarray
    seconds: float = 0.0
    device: str = "cpu"
    spike_trains: dict[str, np.ndarray] | None = None
    potentials: np.ndarray | None = None

    @property
    def samples(self) -> int:
        return int(self.predictions.shape[1])

    def accuracy_by_timestep(self, labels: np.ndarray) -> np.ndarray:
        """(T,) accuracy after each step t = 1..T."""
        return (self.predictions == np.asarray(labels).reshape(1, -1)).mean(axis=1)

    def firing_rates(self) -> dict[str, float]:
        """Spikes per neuron per step, per layer (averaged over samples)."""
        return {k: float(v.mean()) / (self.layer_neurons[k] * self.timesteps)
                for k, v in self.layer_spikes.items()}

    def spikes_per_sample(self) -> float:
        return float(sum(v.mean() for v in self.layer_spikes.values()))


def run_steps(graph: Graph, x: np.ndarray, timesteps: int | None, default: int) -> int:
    """The number of steps a ``run`` simulates (``timesteps``, else ``default``), after checking
    it and that ``x`` fits the graph's input (a finite numeric array; ``snncompile.validate``)
    and the run's memory estimate; every problem is a one-line CompileError. ``timesteps=0``
    is an error (not "the default"), and so are 2.7, ``True`` and a list for ``x``."""
    from snncompile import validate

    steps = validate.integer(default if timesteps is None else timesteps, "timesteps",
                             maximum=2**31 - 1)
    x = validate.samples(x, "x", shape=graph.shape(graph.input_name))
    validate.check_memory(validate.run_memory(len(x), steps, validate.graph_units(graph), 256,
                                              validate.classes(graph) or 1),
                          f"running {len(x)} samples for {steps} steps",
                          hint="fewer samples or steps per call")
    return steps
