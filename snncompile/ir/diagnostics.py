"""User-facing errors: collect every problem, then raise once, naming the IR op and its origin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Diagnostic:
    message: str
    node: str | None = None  # IR op name
    origin: str | None = None  # ONNX node name and op type (Node.origin)
    hint: str | None = None  # e.g. "supported ops: Conv, Gemm, Relu, ..."
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return self.render()

    def render(self, more: str = "") -> str:
        """The diagnostic on one line; ``more`` goes right after the message, before the hint
        (so that "(and 3 more problems)" cannot be read as part of a supported-ops list)."""
        where = ""
        if self.node:
            where = self.node + (f" [from {self.origin}]" if self.origin else "") + ": "
        elif self.origin:
            where = f"{self.origin}: "
        return where + self.message + more + (f"; {self.hint}" if self.hint else "")


class CompileError(Exception):
    """Bad input or bad usage. The CLI prints it, exits 2, and shows no traceback."""

    def __init__(self, headline: str, diagnostics: Sequence[Diagnostic] = ()) -> None:
        self.headline = headline
        self.diagnostics = list(diagnostics)
        super().__init__(str(self))

    def __str__(self) -> str:
        if not self.diagnostics:
            return self.headline
        if len(self.diagnostics) == 1:
            return f"{self.headline}: {self.diagnostics[0]}"
        return self.headline + "".join(f"\n  {d}" for d in self.diagnostics)

    def one_line(self) -> str:
        """The message for stderr: the headline and the first problem (+ how many more), on
        one line (a newline inside a message, e.g. from a library's error text, becomes a
        space)."""
        if not self.diagnostics:
            return " ".join(self.headline.split())
        more = len(self.diagnostics) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        return " ".join(f"{self.headline}: {self.diagnostics[0].render(tail)}".split())


class PassError(Exception):
    """A pass crashed: an internal bug (exit 1, traceback kept). Names the passes that ran."""

    def __init__(self, name: str, after: Sequence[str]) -> None:
        ran = ", ".join(after) or "none"
        super().__init__(f"pass '{name}' failed (ran before it: {ran})")
        self.pass_name = name


class RuntimeFault(Exception):
    """A run failed for a reason outside the input (a simulator worker died or stalled): the
    CLI prints this one line and exits 1. ``str(e)`` names what failed."""
