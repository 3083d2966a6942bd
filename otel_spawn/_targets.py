"""Finding what a funnel spec names: the module (without running it) and the callable's parameters.

A target is `module:qualname`. At configuration time the module is located with the import
system's finders only, so the app's code does not run; its parameters come from the live object
if the module is already imported, else from the module's source (parsed, never executed).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path

from otel_spawn._errors import ConfigError


@dataclass(frozen=True)
class Parameters:
    """The names a call of the target can bind: `self`/`cls` of a method included, `**kwargs` not."""

    names: tuple[str, ...]
    var_keyword: bool = False  # has **kwargs: any other name may arrive as a keyword

    def accepts(self, name: str) -> bool:
        return name in self.names or self.var_keyword


def find_module(name: str) -> ModuleSpec | None:
    """The module's spec, or None if it does not exist. Imports (runs) no code of the app where possible.

    Only the finders run: a submodule is looked up in its parent package's directories without
    importing the parent. If that fails (a parent that builds its `__path__` at import time), the
    normal `importlib.util.find_spec` runs, which imports the parent packages.
    """
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__spec__", None) or ModuleSpec(name, None)
    parts = name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
        for depth in range(1, len(parts)):
            if spec is None or spec.submodule_search_locations is None:
                return None
            full = ".".join(parts[: depth + 1])
            found = PathFinder.find_spec(full, list(spec.submodule_search_locations))
            spec = found if found is not None else importlib.util.find_spec(full)
    except ModuleNotFoundError:
        return None
    except Exception as exc:  # a parent package that fails to import
        raise ConfigError(f"looking up module {name!r} failed: {type(exc).__name__}: {exc}") from exc
    return spec


def parameters_of(obj: object, *, in_class: bool) -> Parameters | None:
    """The parameters of a live function, method, classmethod or staticmethod (None if unknowable)."""
    is_static = isinstance(obj, staticmethod)
    func = obj.__func__ if isinstance(obj, (classmethod, staticmethod)) else obj
    if not callable(func):
        return None
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    params = list(signature.parameters.values())
    names = tuple(p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD)
    if in_class and not is_static and not params:
        return None
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return Parameters(names=names, var_keyword=var_kw)


def live_parameters(module_name: str, qualname: str) -> Parameters | None:
    """Parameters of the target in an already imported module (None if not imported or not found)."""
    obj: object = sys.modules.get(module_name)
    if obj is None:
        return None
    in_class = False
    for part in qualname.split("."):
        in_class = inspect.isclass(obj)
        owner = obj
        obj = None
        for cls in inspect.getmro(owner) if inspect.isclass(owner) else (owner,):
            if part in vars(cls):
                obj = vars(cls)[part]
                break
        if obj is None:
            return None
    return parameters_of(obj, in_class=in_class)


def static_parameters(spec: ModuleSpec, qualname: str) -> Parameters | None:
    """Parameters of `qualname` read from the module's source without running it.

    None when this cannot be known statically: no Python source, the name is bound by something
    other than a plain `def`/`class` at module or class level, or the function has decorators other
    than staticmethod/classmethod (which may change its signature).
    """
    origin = spec.origin
    if not origin or not origin.endswith(".py"):
        return None
    try:
        tree = _parse(origin, Path(origin).stat().st_mtime_ns)
    except (OSError, SyntaxError, ValueError):
        return None
    body: list[ast.stmt] = tree.body
    parts = qualname.split(".")
    node: ast.stmt | None = None
    for depth, part in enumerate(parts):
        node = _last_binding(body, part)
        if depth < len(parts) - 1:
            if not isinstance(node, ast.ClassDef):
                return None
            body = node.body
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    decorators = [d.id for d in node.decorator_list if isinstance(d, ast.Name)]
    if len(decorators) != len(node.decorator_list) or not set(decorators) <= {"staticmethod", "classmethod"}:
        return None
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args)]
    if args.vararg is not None:
        names.append(args.vararg.arg)
    names.extend(a.arg for a in args.kwonlyargs)
    return Parameters(names=tuple(names), var_keyword=args.kwarg is not None)


@functools.lru_cache(maxsize=16)
def _parse(origin: str, mtime_ns: int) -> ast.Module:
    """The module's syntax tree (cached per file version: several targets often share a module)."""
    return ast.parse(Path(origin).read_bytes(), filename=origin)


def _last_binding(body: list[ast.stmt], name: str) -> ast.stmt | None:
    """The last top-level statement of `body` that binds `name` (the one in effect after import)."""
    found: ast.stmt | None = None
    for stmt in body:
        defines = (
            isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and stmt.name == name
        )
        if defines or name in _assigned_names(stmt):
            found = stmt
    return found


def _assigned_names(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in stmt.names}
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        targets = [stmt.target]
    elif isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
        return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} | {
            n.name
            for n in ast.walk(stmt)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
