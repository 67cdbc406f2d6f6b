"""Passes: the registry, the pass manager, the default pipelines and the built-in passes.

Every module of this package except ``registry``, ``manager`` and ``pipelines`` defines built-in
passes, registered when the registry is first consulted (``registry.load_builtins``): importing
this package stays light, and a new pass module needs no entry in a hand-kept list.
"""

from __future__ import annotations

from snncompile.passes.manager import PassManager
from snncompile.passes.registry import (
    FunctionPass,
    Pass,
    PassContext,
    convert_option,
    doc_line,
    get_pass,
    load_builtins,
    load_plugins,
    pass_spec,
    register_pass,
    registered,
    split_pipeline,
    unregister_pass,
)

__all__ = [
    "FunctionPass", "Pass", "PassContext", "PassManager", "convert_option", "doc_line",
    "get_pass", "load_builtins", "load_plugins", "pass_spec", "register_pass", "registered",
    "split_pipeline", "unregister_pass",
]
