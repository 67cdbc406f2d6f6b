"""Lava Processes and ProcessModels of snn-compile (and nothing else).

Lava's compiler imports *every* module in the directory of a module that defines a custom
Process when it looks for ProcessModels (LAVA_NOTES gotcha 1), so this package holds only
side-effect-free modules: no scripts, no tests, nothing that runs on import.

- ``processes``: ``IFReset`` (IF, reset by subtraction), ``Integrator`` (readout),
  ``DelayLine`` (``processes``, not ``neurons``: three other modules are called neurons.py)
- ``lowlatency``: ``SigmaDeltaReset`` (sigma-delta with reset), ``BistableReset`` (BSNN)
- ``gate``: ``MaxPoolGate`` (spiking max-pool, host process)
- ``recorder``: ``SpikeRecorder`` (spikes packed 48 per word, cheap to read back)
"""
