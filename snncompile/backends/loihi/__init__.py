"""``--target loihi``: the spiking IR as a Lava process graph (Loihi 2 simulation, netx export).

Lava is imported only when a network is built or run, so importing this package is cheap.
"""

from __future__ import annotations

import importlib.util
import sys

from snncompile.ir.diagnostics import CompileError, Diagnostic

LAVA_HINT = ("pip install 'snncompile[loihi]' on Python 3.10 (lava-nc 0.10.0 installs on "
             "Python 3.10 only; the gpu target and NIR run on 3.10-3.13)")


def require_lava() -> None:
    """A one-line CompileError (CLI exit 2) when Lava is not installed."""
    if importlib.util.find_spec("lava") is None or importlib.util.find_spec("lava.magma") is None:
        raise CompileError("--target loihi needs Lava", [Diagnostic(
            f"lava-nc is not installed in this Python ({sys.version.split()[0]})", hint=LAVA_HINT)])


from snncompile.backends.loihi.compile import LavaNetwork, compile

__all__ = ["LAVA_HINT", "LavaNetwork", "compile", "require_lava"]
