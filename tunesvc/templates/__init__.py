"""Template registry: built-in templates by name, plus user templates loaded from a file.

Built-ins are imported lazily so ``import tunesvc`` stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from ..errors import UnknownTemplateError, UsageError
from .base import Constraint, Context, KernelTemplate, Launch, Offset, Param, Plan, BufferSpec  # noqa: F401

#: name -> "module:Class" for the built-in templates.
BUILTIN = {
    "matmul": "tunesvc.templates.matmul:Matmul",
    "reduce_sum": "tunesvc.templates.reduce:ReduceSum",
    "reduce_max": "tunesvc.templates.reduce:ReduceMax",
    "reduce_mean": "tunesvc.templates.reduce:ReduceMean",
    "reduce_sumsq": "tunesvc.templates.reduce:ReduceSumsq",
    "attention": "tunesvc.templates.attention:Attention",
    "attention_causal": "tunesvc.templates.attention:AttentionCausal",
}

_instances: dict[str, KernelTemplate] = {}


def register(template: KernelTemplate) -> KernelTemplate:
    """Make a template instance known under its name (user templates call this)."""
    if not template.name:
        raise UsageError(f"template {type(template).__name__} has no name")
    _instances[template.name] = template
    return template


def names() -> list[str]:
    return sorted(set(BUILTIN) | set(_instances))


def load_file(path: str | Path) -> KernelTemplate:
    """Load a user template from a Python file that defines ``TEMPLATE`` (an instance)."""
    p = Path(path)
    if not p.is_file():
        raise UnknownTemplateError(f"template file {str(p)!r} does not exist")
    name = f"tunesvc_user_{p.stem}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so inspect (relative source_file) and pickling find it
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's module: say which file broke and how
        sys.modules.pop(name, None)
        raise UsageError(f"template file {str(p)!r} failed to import: {type(e).__name__}: {e}") from e
    tpl = getattr(module, "TEMPLATE", None)
    if not isinstance(tpl, KernelTemplate):
        raise UsageError(f"template file {str(p)!r} must define TEMPLATE = <a KernelTemplate instance>")
    return register(tpl)


def get(name: str | KernelTemplate) -> KernelTemplate:
    """The template for a name, a path to a user template file, or an instance."""
    if isinstance(name, KernelTemplate):
        return name
    if name in _instances:
        return _instances[name]
    if name in BUILTIN:
        module, cls = BUILTIN[name].split(":")
        return register(getattr(importlib.import_module(module), cls)())
    if name.endswith(".py"):
        return load_file(name)
    raise UnknownTemplateError(f"unknown template {name!r}; known: {', '.join(names())} (or a path to a template .py file)")
