"""``--target loihi``: the spiking IR as a Lava process graph (Loihi 2 simulation, netx export).

Lava is imported only when a network is built or run, so importing this package is cheap.
"""

from __future__ import annotations

from snncompile.backends.loihi.compile import LavaNetwork, compile

__all__ = ["LavaNetwork", "compile"]
