"""Per-layer overrides in pass options: ``layers=NAME:V1[:V2];NAME:V1...``.

A pass option is one string in a spec (``name{k=v,...}``), so a per-layer map is written as
entries separated by ``;``, each ``layer name`` then ``:``-separated values. Values are split off
the right end (``rsplit``), so a layer name may itself contain ``:`` or ``/`` (ONNX names such as
``/block1/conv1/Conv``); it may not contain ``;``, ``,``, ``{`` or ``}``.
"""

from __future__ import annotations

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph


def parse_layer_map(text: str, where: str, n_values: int) -> dict[str, tuple[str, ...]]:
    """``"a:x:y;b:z:w"`` -> ``{"a": ("x", "y"), "b": ("z", "w")}`` (``n_values`` per entry)."""
    out: dict[str, tuple[str, ...]] = {}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        parts = entry.rsplit(":", n_values)
        if len(parts) != n_values + 1 or not parts[0]:
            raise CompileError("bad pass option", [Diagnostic(
                f"{where}: entry {entry!r}", hint=f"expected NAME{':VALUE' * n_values}")])
        out[parts[0]] = tuple(p.strip() for p in parts[1:])
    return out


def format_layer_map(items: dict[str, tuple[object, ...]]) -> str:
    return ";".join(f"{k}:" + ":".join(str(v) for v in vals) for k, vals in items.items())


def check_layers(graph: Graph, names: object, where: str) -> None:
    """Every overridden layer must exist: a typo would otherwise be silently ignored."""
    missing = [n for n in names if n not in graph]  # type: ignore[attr-defined]
    if missing:
        raise CompileError("bad pass option", [Diagnostic(
            f"{where}: no layer named {', '.join(map(repr, missing))}",
            hint="names as printed by --target ir")])
