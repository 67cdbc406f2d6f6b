"""Passes: the registry, the pass manager, and the built-in passes (registered on import)."""

from __future__ import annotations

from snncompile.passes.registry import (
    FunctionPass,
    Pass,
    PassContext,
    doc_line,
    get_pass,
    load_plugins,
    pass_spec,
    register_pass,
    registered,
    split_pipeline,
    unregister_pass,
)
from snncompile.passes.manager import PassManager

# built-in passes register themselves on import
from snncompile.passes import fold_batchnorm as _fold_batchnorm  # noqa: E402,F401
from snncompile.passes import fuse_activations as _fuse_activations  # noqa: E402,F401
from snncompile.passes import remove_identity as _remove_identity  # noqa: E402,F401
from snncompile.passes import balance_thresholds as _balance_thresholds  # noqa: E402,F401
from snncompile.passes import initial_potential as _initial_potential  # noqa: E402,F401
from snncompile.passes import quantize_weights as _quantize_weights  # noqa: E402,F401
from snncompile.passes import fold_thresholds as _fold_thresholds  # noqa: E402,F401
from snncompile.passes import select_neurons as _select_neurons  # noqa: E402,F401
from snncompile.passes import sync_shortcuts as _sync_shortcuts  # noqa: E402,F401
from snncompile.passes import threshold_search as _threshold_search  # noqa: E402,F401
from snncompile.passes import bias_calibration as _bias_calibration  # noqa: E402,F401

__all__ = [
    "FunctionPass", "Pass", "PassContext", "PassManager", "doc_line", "get_pass", "load_plugins",
    "pass_spec", "register_pass", "registered", "split_pipeline", "unregister_pass",
]
