"""The default pass pipelines, built from pass objects in one place (the CLI and the Python API
both call ``default_pipeline``). ``PassManager.spec()`` prints any pipeline as a replayable
string (``--pipeline``), which report.json records.

    front       fold-batchnorm, remove-identity, fuse-activations          (every target)
    pools       [maxpool-current]                          (gpu, loihi; --maxpool current)
    conversion  balance-thresholds{norm, channelwise}, initial-potential{alpha},
                [quantize-weights{bits, granularity}], [fold-thresholds],
                [select-neurons{model, ...}], [sync-shortcuts]           (gpu, loihi)
"""

from __future__ import annotations

from snncompile import neurons
from snncompile.options import CompileOptions
from snncompile.passes.balance_thresholds import BalanceThresholds
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.fold_thresholds import fold_thresholds
from snncompile.passes.fuse_activations import fuse_activations
from snncompile.passes.initial_potential import InitialPotential
from snncompile.passes.maxpool_current import maxpool_current
from snncompile.passes.quantize_weights import QuantizeWeights
from snncompile.passes.registry import Pass
from snncompile.passes.remove_identity import remove_identity
from snncompile.passes.select_neurons import SelectNeurons
from snncompile.passes.sync_shortcuts import sync_shortcuts

#: the front-end clean-up every target runs
FRONT: tuple[Pass, ...] = (fold_batchnorm, remove_identity, fuse_activations)


def conversion_passes(o: CompileOptions) -> list[Pass]:
    """The ANN -> SNN passes for the options."""
    passes: list[Pass] = [BalanceThresholds(norm=o.norm, channelwise=o.channelwise),
                          InitialPotential(alpha=o.alpha)]
    if o.weight_bits is not None:
        passes.append(QuantizeWeights(bits=o.weight_bits, granularity=o.weight_granularity))
    if o.fold_thresholds:
        passes.append(fold_thresholds)
    if o.neuron != "if":
        given = {"members": o.gn_members, "period": o.bistable_period, "delta": o.sd_delta}
        wanted = neurons.get_spec(o.neuron).options  # only the options the model reads
        passes.append(SelectNeurons(model=o.neuron, **{k: given[k] for k in wanted}))
    if o.sync_shortcuts:
        passes.append(sync_shortcuts)
    return passes


def pool_passes(o: CompileOptions) -> list[Pass]:
    """The rewrites of the ANN form that the spiking max-pool variant needs (``--maxpool``):
    run after the front, before the conversion passes."""
    return [maxpool_current] if o.maxpool == "current" else []


def default_pipeline(target: str, o: CompileOptions) -> list[Pass]:
    """The pipeline of ``target``: the front alone for ``ir``, else front + pools +
    conversion."""
    if target == "ir":
        return list(FRONT)
    return [*FRONT, *pool_passes(o), *conversion_passes(o)]
