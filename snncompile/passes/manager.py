"""The pass manager: runs a pipeline, verifies between passes, dumps IR on request."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snncompile.ir.diagnostics import CompileError, Diagnostic, PassError, RuntimeFault
from snncompile.ir.graph import Graph
from snncompile.ir.serialize import save
from snncompile.ir.verify import verify
from snncompile.passes.registry import (
    PassContext,
    check_pass,
    get_pass,
    pass_spec,
    split_pipeline,
)


@dataclass
class PassManager:
    passes: Sequence[Any]
    verify: bool = True
    dump_dir: Path | None = None
    dump_after: set[str] = field(default_factory=set)  # pass names, or {"all"}
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every entry is a pass: a spec string is built (``get_pass``); anything else that
        is not a pass, or has an option of the wrong type, is a CompileError naming it."""
        if isinstance(self.passes, str) or not isinstance(self.passes, Sequence):
            raise CompileError("bad pipeline", [Diagnostic(
                f"passes is a {type(self.passes).__name__}; expected a list of passes or specs")])
        self.passes = [get_pass(p) if isinstance(p, str) else check_pass(p, f"passes[{i}]")
                       for i, p in enumerate(self.passes)]

    @classmethod
    def from_specs(cls, specs: Sequence[str] | str, **kw: Any) -> PassManager:
        if isinstance(specs, str):
            specs = split_pipeline(specs)
        return cls(list(specs), **kw)

    def run(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        ctx = ctx or PassContext()
        verify(graph, stage="on the frontend output")
        for i, p in enumerate(self.passes):
            t0 = time.perf_counter()
            try:
                out = p.run(graph, ctx)
            except CompileError as e:
                ran = ", ".join(q.name for q in self.passes[:i]) or "none"
                e.headline = f"{e.headline} (in pass '{p.name}'; ran: {ran})"
                raise
            except SystemExit as e:  # a pass may not end the process (exit 1, nothing written)
                ran = ", ".join(q.name for q in self.passes[:i]) or "none"
                raise RuntimeFault(
                    f"pass '{p.name}' called sys.exit({e.code!r}) (ran before it: {ran}); a "
                    "pass may not end the run: raise snncompile.CompileError to refuse its "
                    "input") from None
            except Exception as e:
                raise PassError(p.name, after=[q.name for q in self.passes[:i]]) from e
            if not isinstance(out, Graph):
                raise CompileError(f"pass '{p.name}' returned {type(out).__name__}, not a Graph",
                                   [Diagnostic("a pass returns the (new) graph",
                                               hint="end the pass with 'return graph'")])
            graph = out
            self.timings[p.name] = time.perf_counter() - t0
            ctx.log.info("pass %-22s %.3f s", p.name, self.timings[p.name])
            if self.verify:
                ran = ", ".join(q.name for q in self.passes[:i])
                verify(graph, stage=f"after '{p.name}'" + (f" (ran: {ran})" if ran else ""))
            dump = p.name in self.dump_after or "all" in self.dump_after
            if self.dump_dir is not None and dump:
                save(graph, self.dump_dir / f"{i + 1:02d}-{p.name}")
        return graph

    def spec(self) -> str:
        """The pipeline as one replayable string: ``a,b{k=v},c``."""
        return ",".join(pass_spec(p) for p in self.passes)
