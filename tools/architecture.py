"""The package's import graph in figures: modules, rooms, arrows, circles, long functions.

    python tools/architecture.py [PACKAGE_DIR]     # default: tunesvc/ beside this folder

A *room* is a top-level module or a folder of ``tunesvc/``; an *arrow* is one module importing
another (function-level imports included: a lazy import is still a dependency). Arrows that
run *back up* are those against the order of ``ROOMS`` (bottom first), the order the data path
and docs/architecture.md give; a *circle* is a set of modules (or rooms) that import each
other round. tests/test_architecture.py holds the package to these figures.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

#: the rooms from the bottom up: each may import only the rooms before it
ROOMS = ("_version", "errors", "types", "settings", "identity", "templates", "search", "devices", "measure",
         "replay", "cache", "lookup", "tuning", "kernels", "report", "service", "cli", "__init__", "__main__")
MAX_FUNCTION_LINES = 60


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, node: ast.ImportFrom, known: dict) -> list[str]:
    """The package's modules an ``from X import a, b`` statement in module ``name`` reaches."""
    if node.level:
        is_package = known[name].name == "__init__.py"
        base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    hits = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
    if len(hits) < len(node.names) and target in known:
        hits.append(target)  # names that are not submodules come from the module itself
    return hits


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its body)."""
    graph: dict[str, set[str]] = {m: set() for m in known}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                graph[name].update(_resolve(name, node, known))
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in known)
        graph[name].discard(name)
    return graph


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan's algorithm, iteratively)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        group.append(top)
                        if top == node:
                            break
                    if len(group) > 1:
                        out.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def long_functions(known: dict[str, Path], limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, str, int]]:
    out = []
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    out.append((name, node.name, lines))
    return out


def figures(package: Path) -> dict:
    known = modules(package)
    graph = imports(known)
    arrows = [(a, b) for a in graph for b in sorted(graph[a])]
    rooms: dict[str, set[str]] = defaultdict(set)
    for a, b in arrows:
        if room_of(a) != room_of(b):
            rooms[room_of(a)].add(room_of(b))
    order = {r: i for i, r in enumerate(ROOMS)}
    back_up = [(a, b) for a, b in arrows if room_of(a) != room_of(b)
               and order.get(room_of(b), len(ROOMS)) > order.get(room_of(a), len(ROOMS))]
    top = sorted(m for m in known if len(m.split(".")) == 2 and known[m].name != "__init__.py") + [package.name]
    return {
        "modules": len(known),
        "top_level_modules": top,
        "folders": sorted({room_of(m) for m in known if known[m].parent != package}),
        "rooms": len({room_of(m) for m in known}),
        "arrows": len(arrows),
        "room_arrows": sum(len(v) for v in rooms.values()),
        "back_up": back_up,
        "unplaced_rooms": sorted({room_of(m) for m in known} - set(ROOMS)),
        "module_circles": circles(graph),
        "room_circles": circles({r: rooms.get(r, set()) for r in {room_of(m) for m in known}}),
        "long_functions": long_functions(known),
    }


def main(argv: list[str]) -> int:
    package = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "tunesvc"
    f = figures(package.resolve())
    print(f"modules {f['modules']}; at the top of {package.name}/: {len(f['top_level_modules'])} "
          f"({', '.join(Path(m).name for m in f['top_level_modules'])})")
    print(f"folders {len(f['folders'])}: {', '.join(f['folders'])}; rooms {f['rooms']}")
    print(f"arrows {f['arrows']} between modules, {f['room_arrows']} between rooms")
    print(f"arrows that run back up (against the room order): {len(f['back_up'])}"
          + "".join(f"\n  {a} -> {b}" for a, b in f["back_up"]))
    if f["unplaced_rooms"]:
        print(f"rooms outside the declared order: {', '.join(f['unplaced_rooms'])}")
    print(f"circles of modules: {len(f['module_circles'])}" + "".join(f"\n  {' <-> '.join(c)}" for c in f["module_circles"]))
    print(f"circles of rooms: {len(f['room_circles'])}" + "".join(f"\n  {' <-> '.join(c)}" for c in f["room_circles"]))
    print(f"functions over {MAX_FUNCTION_LINES} lines: {len(f['long_functions'])}"
          + "".join(f"\n  {m}.{fn}: {n}" for m, fn, n in f["long_functions"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
