"""The pass protocol, the registry, pass specs and the pass context.

A pass has a kebab-case ``name`` and ``run(graph, ctx) -> Graph``; it never mutates its input.
A pass without options is a function, wrapped by ``register_pass`` in a ``FunctionPass``. A
pass with options is a frozen dataclass whose fields are the options; a spec string
``balance-thresholds{norm=max,channelwise=true}`` builds one (xDSL-style).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import logging
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic
from snncompile.ir.graph import Graph
from snncompile.ir.typecheck import conforms, expected, field_hints

T = TypeVar("T")
_KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
log = logging.getLogger("snncompile")


@dataclass
class PassContext:
    """What a pass needs besides the graph.

    ``calibration``: input samples (N, C, H, W) for data-driven passes; ``labels`` when known.
    ``notes``: per-pass results that end up in report.json (keyed by pass name).
    """

    calibration: np.ndarray | None = None
    labels: np.ndarray | None = None
    seed: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: log)

    def need_calibration(self, pass_name: str) -> np.ndarray:
        if self.calibration is None:
            raise CompileError(f"pass '{pass_name}' needs calibration data",
                               [Diagnostic("give --calibration F.npz or --dataset digits")])
        return self.calibration


@runtime_checkable
class Pass(Protocol):
    name: ClassVar[str]

    def run(self, graph: Graph, ctx: PassContext) -> Graph: ...


@dataclass(frozen=True)
class FunctionPass:
    """A registered option-less pass function."""

    name: str
    fn: Callable[[Graph, PassContext], Graph]

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self.fn.__doc__

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return self.fn(graph, ctx)

    def __call__(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        return self.fn(graph, ctx or PassContext())


_PASSES: dict[str, Any] = {}  # name -> FunctionPass instance or Pass dataclass
_PLUGINS_LOADED = False


def register_pass(name: str) -> Callable[[T], T]:
    """Register a pass function or a Pass class under ``name`` (kebab-case, unique)."""
    if not _KEBAB.match(name):
        raise ValueError(f"pass name {name!r} is not kebab-case")

    def deco(obj: T) -> T:
        if name in _PASSES:
            raise CompileError("duplicate pass name", [Diagnostic(
                f"{name!r} is already registered by {_describe(_PASSES[name])}",
                hint=f"second registration: {_describe(obj)}")])
        if isinstance(obj, type):
            obj.name = name  # type: ignore[attr-defined]
            _PASSES[name] = obj
            return obj
        fp = FunctionPass(name, obj)  # type: ignore[arg-type]
        _PASSES[name] = fp
        return fp  # type: ignore[return-value]

    return deco


def unregister_pass(name: str) -> None:
    """Remove a registered pass (tests, interactive sessions)."""
    _PASSES.pop(name, None)


def _describe(obj: Any) -> str:
    fn = getattr(obj, "fn", obj)
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


_NOT_PASSES = {"registry", "manager", "pipelines"}
_BUILTINS_LOADED = False


def load_builtins() -> None:
    """Import every built-in pass module of ``snncompile.passes`` (once): they register
    themselves. Found by listing the package, not by a hand-kept list."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import pkgutil

    import snncompile.passes as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in _NOT_PASSES and not info.name.startswith("_"):
            importlib.import_module(f"snncompile.passes.{info.name}")


def load_plugins() -> None:
    """Import the passes advertised in the ``snncompile.passes`` entry-point group (once)."""
    global _PLUGINS_LOADED
    load_builtins()
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in importlib.metadata.entry_points(group="snncompile.passes"):
        obj = ep.load()
        if ep.name not in _PASSES:
            register_pass(ep.name)(getattr(obj, "fn", obj))
        elif getattr(_PASSES[ep.name], "fn", _PASSES[ep.name]) is not getattr(obj, "fn", obj):
            dist = ep.dist.name if ep.dist else "?"
            raise CompileError("duplicate pass name", [Diagnostic(
                f"entry point {ep.name!r} from distribution {dist} clashes with "
                f"{_describe(_PASSES[ep.name])}")])


def registered() -> dict[str, Any]:
    load_plugins()
    return dict(sorted(_PASSES.items()))


def doc_line(obj: Any) -> str:
    doc = (getattr(obj, "fn", None) or obj).__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


# ---------------------------------------------------------------------------- specs
_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-:]+)\s*(?:\{(.*)\})?\s*$")


def split_pipeline(text: str) -> list[str]:
    """Split ``a,b{x=1,y=2},c`` at the commas outside braces."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def convert_option(value: str, typ: Any, where: str) -> Any:
    """A pass or method option's text ``value`` as type ``typ`` (bool, int, float, str,
    Literal, Optional); a CompileError naming ``where`` if it does not parse."""
    if isinstance(typ, str):
        typ = {"int": int, "float": float, "bool": bool, "str": str}.get(
            typ.split("|")[0].strip(), str)
    origin = typing.get_origin(typ)
    if origin is typing.Literal:
        if value not in typing.get_args(typ):
            raise CompileError("bad pass option", [Diagnostic(
                f"{where}={value!r}; expected one of {', '.join(map(str, typing.get_args(typ)))}")])
        return value
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        if value.lower() in ("none", "null"):
            return None
        return convert_option(value, args[0], where)
    try:
        if typ is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if typ in (int, float, str):
            return typ(value)
    except ValueError:
        raise CompileError("bad pass option", [Diagnostic(
            f"{where}={value!r}; expected {expected(typ)}")]) from None
    return value


def get_pass(spec: str) -> Any:
    """Build a pass from ``name``, ``name{opt=val,...}`` or ``pkg.module:object``."""
    m = _SPEC.match(spec)
    if not m:
        raise CompileError("bad pass spec", [Diagnostic(repr(spec))])
    name, opts_text = m.group(1), m.group(2)
    if ":" in name:
        return _import_pass(name, opts_text)
    passes = registered()
    if name.replace("_", "-") in passes:
        name = name.replace("_", "-")
    if name not in passes:
        raise CompileError("unknown pass", [Diagnostic(
            repr(name), hint=f"registered passes: {', '.join(passes)}")])
    return _instantiate(passes[name], name, opts_text)


def _instantiate(obj: Any, name: str, opts_text: str | None) -> Any:
    opts: dict[str, str] = {}
    for item in split_pipeline(opts_text or ""):
        if "=" not in item:
            raise CompileError("bad pass option",
                               [Diagnostic(f"{name}{{{item}}}: expected key=value")])
        k, v = item.split("=", 1)
        opts[k.strip().replace("-", "_")] = v.strip()
    if not isinstance(obj, type):
        if opts:
            raise CompileError("bad pass option", [Diagnostic(f"pass '{name}' takes no options")])
        return obj
    known = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(obj)
    kwargs = {}
    for k, v in opts.items():
        if k not in known:
            raise CompileError("bad pass option", [Diagnostic(
                f"pass '{name}' has no option {k!r}",
                hint=f"options: {', '.join(known) or 'none'}")])
        kwargs[k] = convert_option(v, hints.get(k, str), f"pass '{name}' option {k}")
    return obj(**kwargs)


def _import_pass(target: str, opts_text: str | None) -> Any:
    mod_name, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
        obj = getattr(mod, attr)
    except (ImportError, AttributeError) as e:
        raise CompileError("cannot import pass", [Diagnostic(f"{target}: {e}")]) from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's module raised (or
        # called sys.exit) while importing
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        at = f" ({tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})" if tb is not None else ""
        raise CompileError("cannot import pass", [Diagnostic(
            f"{target}: importing {mod_name} raised {type(e).__name__}: {e}{at}")]) from None
    if isinstance(obj, FunctionPass) or (isinstance(obj, type) and hasattr(obj, "run")):
        return _instantiate(obj, getattr(obj, "name", attr), opts_text)
    if callable(obj):
        name = getattr(obj, "name", None) or attr.replace("_", "-")
        return FunctionPass(name, obj)
    raise CompileError("cannot import pass", [Diagnostic(f"{target} is not a pass or a function")])


def check_pass(p: Any, where: str) -> Any:
    """``p`` (a pipeline entry, ``where`` says which: "passes[3]") is a pass object: a
    ``name`` and a ``run(graph, ctx)``, options of their declared types. Returns it; a
    CompileError naming the entry (and the pass and option) otherwise."""
    if isinstance(p, type) and hasattr(p, "run"):
        raise CompileError("bad pass", [Diagnostic(
            f"{where} is the class {p.__name__}, not a pass object",
            hint=f"give an instance, {p.__name__}(...), or its spec string")])
    if not (isinstance(getattr(p, "name", None), str) and callable(getattr(p, "run", None))):
        raise CompileError("bad pass", [Diagnostic(
            f"{where} is {_short(p)} ({type(p).__name__}), not a pass",
            hint="give a spec string ('fold-batchnorm', 'balance-thresholds{norm=max}', "
                 "'module:obj') or an object with a name and run(graph, ctx)")])
    if dataclasses.is_dataclass(p) and not isinstance(p, FunctionPass):
        hints = field_hints(type(p))
        for f in dataclasses.fields(p):
            v = getattr(p, f.name)
            if f.name in hints and not conforms(v, hints[f.name]):
                raise CompileError("bad pass option", [Diagnostic(
                    f"pass '{p.name}' option {f.name}={_short(v)} ({type(v).__name__}); "
                    f"expected {expected(hints[f.name])}")])
    return p


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def pass_spec(p: Any) -> str:
    """The spec string that rebuilds ``p``: ``name`` or ``name{k=v,...}`` (non-default options)."""
    if dataclasses.is_dataclass(p) and not isinstance(p, FunctionPass):
        opts = [f"{f.name}={_fmt(getattr(p, f.name))}" for f in dataclasses.fields(p)
                if getattr(p, f.name) != f.default]
        return p.name + (f"{{{','.join(opts)}}}" if opts else "")
    return p.name


def _fmt(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)
