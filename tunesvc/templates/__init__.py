"""Template registry: built-in templates by name, plus user templates.

A user template is found by its name once it is known: from an installed package's entry point
(group ``tunesvc.templates``, ``name = "module:OBJECT"``, an instance or a class), or from the
file it was first loaded from (remembered in ``<cache dir>/templates.json``), so ``lookup``,
``show`` and ``export`` take the name a ``tune path/to/file.py`` stored. Built-ins and entry
points are imported lazily so ``import tunesvc`` stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

from ..errors import UnknownTemplateError, UsageError
from ..settings import cache_dir
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
    "gemv_q": "tunesvc.templates.gemv_q:GemvQ",
    "gemv_q_zp": "tunesvc.templates.gemv_q:GemvQZp",
}

_instances: dict[str, KernelTemplate] = {}


def register(template: KernelTemplate) -> KernelTemplate:
    """Make a template instance known under its name (user templates call this)."""
    if not template.name:
        raise UsageError(f"template {type(template).__name__} has no name")
    _instances[template.name] = template
    return template


def names() -> list[str]:
    return sorted(set(BUILTIN) | set(_instances) | set(_entry_points()) | set(_remembered()))


ENTRY_POINT_GROUP = "tunesvc.templates"


def _entry_points() -> dict:
    """name -> entry point of the installed packages that offer templates."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _from_entry_point(name: str, ep) -> KernelTemplate:
    try:
        obj = ep.load()
    except Exception as e:  # the package's module: say which entry point broke
        raise UsageError(f"template {name!r} of entry point {ep.value!r} failed to import: {type(e).__name__}: {e}") from None
    tpl = obj() if isinstance(obj, type) and issubclass(obj, KernelTemplate) else obj
    if not isinstance(tpl, KernelTemplate) or tpl.name != name:
        raise UsageError(f"entry point {name} = {ep.value!r} must name a KernelTemplate whose name is {name!r}")
    return register(tpl)


# ---- user template files, remembered by name ------------------------------------------------
def _remembered_file() -> Path:
    return cache_dir() / "templates.json"


def _remembered() -> dict[str, str]:
    """name -> the absolute path of the file a user template was loaded from."""
    try:
        data = json.loads(_remembered_file().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}


def _remember(name: str, path: Path) -> None:
    """Keep name -> path for later processes; a cache that cannot be written is not an error
    (the template then answers to its file path only)."""
    known = _remembered()
    if known.get(name) == str(path):
        return
    known[name] = str(path)
    target = _remembered_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        os.replace(tmp, target)
    except OSError:
        pass


def _from_remembered(name: str, path: str) -> KernelTemplate:
    if not Path(path).is_file():
        raise UnknownTemplateError(f"template {name!r} was loaded from {path!r}, which no longer exists; "
                                   "pass the template's new file path")
    tpl = load_file(path)
    if tpl.name != name:
        raise UnknownTemplateError(f"{path!r}, where template {name!r} was loaded from, now defines {tpl.name!r}; "
                                   "pass the template's file path")
    return tpl


def _exec_file(path: Path):
    """Run a template file as a module named after it (kept in sys.modules, so inspect finds
    its source and pickling its classes works); UsageError naming the file if it fails."""
    name = f"tunesvc_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"template file {str(path)!r} cannot be loaded as a Python module")
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
    shown = str(p) if len(str(p)) <= 200 else str(p)[:200] + "..."
    try:
        found = p.is_file()
    except OSError as e:  # a name too long for the file system, a component that is not a folder, ...
        raise UnknownTemplateError(f"template file {shown!r} cannot be read: {e.strerror or e}") from None
    if not found:
        raise UnknownTemplateError(f"template file {shown!r} does not exist")
    tpl = getattr(_exec_file(p), "TEMPLATE", None)
    if not isinstance(tpl, KernelTemplate):
        raise UsageError(f"template file {str(p)!r} must define TEMPLATE = <a KernelTemplate instance>")
    if tpl.name not in BUILTIN:
        _remember(tpl.name, p.resolve())
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
    if (ep := _entry_points().get(name)) is not None:
        return _from_entry_point(name, ep)
    if (path := _remembered().get(name)) is not None:
        return _from_remembered(name, path)
    if len(name) > 200:
        raise UnknownTemplateError(f"unknown template {name[:60]!r}... ({len(name)} characters); known: {', '.join(names())}")
    raise UnknownTemplateError(f"unknown template {name!r}; known: {', '.join(names())} (or a path to a template .py file)")
