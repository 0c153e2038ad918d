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


def _exec_file(path: Path):
    """Run a template file as a module named after it (kept in sys.modules, so inspect finds
    its source and pickling its classes works); UsageError naming the file if it fails."""
    name = f"tunesvc_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's module: say which file broke and how
        sys.modules.pop(name, None)
        raise UsageError(f"template file {str(path)!r} failed to import: {type(e).__name__}: {e}") from e
    return module


def load_file(path: str | Path) -> KernelTemplate:
    """Load a user template from a Python file that defines ``TEMPLATE`` (an instance)."""
    p = Path(path)
    if not p.is_file():
        raise UnknownTemplateError(f"template file {str(p)!r} does not exist")
    tpl = getattr(_exec_file(p), "TEMPLATE", None)
    if not isinstance(tpl, KernelTemplate):
        raise UsageError(f"template file {str(p)!r} must define TEMPLATE = <a KernelTemplate instance>")
    return register(tpl)


def ref(tpl: KernelTemplate) -> str | None:
    """How another process finds the same template: a built-in's name, or ``FILE::CLASS`` for a
    template class defined in a file; None if it has no file (defined interactively)."""
    if tpl.name in BUILTIN and get(tpl.name) is tpl:
        return tpl.name
    cls = type(tpl)
    path = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if not path:  # loaded from a file (not in sys.modules): the code of the class's own methods knows it
        path = next((v.__code__.co_filename for v in vars(cls).values() if hasattr(v, "__code__")), "")
    if not path or not Path(path).is_file():
        return None
    return f"{Path(path).resolve()}::{cls.__qualname__}"


def load(reference: str) -> KernelTemplate:
    """The template a :func:`ref` names, loaded in this process."""
    if "::" not in reference:
        return get(reference)
    path, qualname = reference.rsplit("::", 1)
    module = _exec_file(Path(path))
    cls = module
    for part in qualname.split("."):
        cls = getattr(cls, part)
    tpl = getattr(module, "TEMPLATE", None)
    return register(tpl if isinstance(tpl, cls) else cls())


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
