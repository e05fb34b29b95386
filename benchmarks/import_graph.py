"""Import structure of ``platform/recdistill``, read from source with ``ast`` (nothing is imported).

Every import statement counts: inside functions (lazy), under ``if TYPE_CHECKING``, relative.
``from recdistill.pkg import name`` imports ``pkg.name`` if that is a submodule, else ``pkg``; an
import names only its target, not the parent packages Python also runs. Names omit ``recdistill.``.

- lines, modules: non-blank lines of all ``.py`` files; number of files.
- rooms: each subpackage and each top-level module (not the root ``__init__``); arrows: distinct
  import edges between two different rooms.
- floors: strongly connected groups of rooms, each one floor above the highest group it imports
  (floor 0 imports nothing in the package). Arrows back up: arrows to a room on the same or a
  higher floor, i.e. every arrow inside a room circle.
- circles: strongly connected groups of more than one room or module; a module circle is shown as
  the shortest cycle through each of its edges.
- private imports: ``from recdistill.x import _name``, listed when the importer is in another room
  than ``x``, counted when in the same one.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Any

PKG = "recdistill"
Graph = dict[str, set[str]]


def find_modules(root: Path) -> dict[str, Path]:
    """Module name ('' for the root package, 'data' for data/__init__.py) -> file."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def room(module: str) -> str:  # 'data' for data.schema, 'config' for config
    return module.split(".")[0]


def scan(modules: dict[str, Path]) -> tuple[Graph, list[tuple[str, str, str]], list[bool]]:
    """Module graph; private imports (importer, module, name); for each import statement, if lazy."""
    graph: Graph = {m: set() for m in modules}
    private: list[tuple[str, str, str]] = []
    statements: list[bool] = []

    def existing(dotted: str) -> str:  # the longest prefix that is a module ('' always is)
        while dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted

    def inside(name: str) -> str | None:
        return name[len(PKG) + 1:] if name == PKG or name.startswith(PKG + ".") else None

    for mod, path in modules.items():
        package = [p for p in (mod if path.name == "__init__.py" else mod.rpartition(".")[0]).split(".") if p]
        tree = ast.parse(path.read_text(), str(path))
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for n in ast.walk(f)}
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [existing(t) for t in (inside(a.name) for a in node.names) if t is not None]
            elif isinstance(node, ast.ImportFrom):
                parent = package[: len(package) + 1 - node.level]
                base = ".".join(parent + [node.module or ""]).strip(".") if node.level else inside(node.module or "")
                for alias in node.names if base is not None else []:
                    sub = f"{base}.{alias.name}".strip(".")
                    targets.append(sub if sub in modules else existing(base))
                    if alias.name.startswith("_") and sub not in modules:
                        private.append((mod, existing(base), alias.name))
            if targets:
                statements.append(id(node) in in_functions)
                graph[mod] |= {t for t in targets if t and t != mod}
    return graph, private, statements


def closing_cycles(graph: Graph, comp: set[str]) -> list[str]:
    """The shortest cycle through each edge u -> v inside ``comp``, starting at its smallest module."""
    cycles: set[tuple[str, ...]] = set()
    for u, v in ((u, v) for u in comp for v in graph[u] & comp):
        paths, queue = {v: [v]}, [v]  # breadth-first from v until it meets u
        for x in queue:
            for w in sorted(graph[x] & comp - paths.keys()):
                paths[w] = paths[x] + [w]
                queue.append(w)
        cycle = [u] + paths[u][:-1]
        i = cycle.index(min(cycle))
        cycles.add(tuple(cycle[i:] + cycle[:i]))
    return [" -> ".join(c + c[:1]) for c in sorted(cycles)]


def reach(graph: Graph, start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        new = graph[todo.pop()] - seen
        seen |= new
        todo += new
    return seen


def reverse(graph: Graph) -> Graph:
    return {m: {s for s in graph if m in graph[s]} for m in graph}


def groups(graph: Graph) -> dict[str, frozenset[str]]:
    """Each node's strongly connected group: the nodes it reaches that also reach it."""
    back = reverse(graph)
    return {m: frozenset(reach(graph, m) & reach(back, m)) for m in graph}


def circles(graph: Graph) -> list[list[str]]:
    return sorted(sorted(g) for g in set(groups(graph).values()) if len(g) > 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1] / "platform" / PKG,
                        help="package directory to measure (default: this checkout's platform/recdistill)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--from", dest="source", help="with --to: the modules on import paths between the two")
    parser.add_argument("--to", dest="target", help="a module name such as online.pipeline")
    args = parser.parse_args()
    if not (args.root / "__init__.py").is_file():
        parser.error(f"{args.root} is not a package: it has no __init__.py")
    modules = find_modules(args.root)
    if (args.source or args.target) and not {args.source, args.target} <= modules.keys():
        parser.error(f"--from and --to need two modules of {args.root}, named without '{PKG}.'")

    graph, private, statements = scan(modules)
    rooms: Graph = {room(m): set() for m in modules if m}
    for m, targets in graph.items():
        if m:
            rooms[room(m)] |= {room(t) for t in targets if t} - {room(m)}
    group = groups(rooms)
    floor = dict.fromkeys(rooms, 0)
    for _ in rooms:  # longest path down the groups; settles within one pass per room
        floor = {r: max((floor[t] + 1 for g in group[r] for t in rooms[g] - group[r]), default=0) for r in rooms}
    arrows = sorted((a, b) for a in rooms for b in rooms[a])
    across = sorted(f"{i}: {m}.{n}" for i, m, n in private if room(i) != room(m))
    fig: dict[str, Any] = {
        "lines": sum(1 for p in modules.values() for line in p.read_text().splitlines() if line.strip()),
        "modules": len(modules), "import_statements": len(statements), "lazy_import_statements": sum(statements),
        "module_edges": sum(map(len, graph.values())), "rooms": len(rooms), "arrows": len(arrows),
        "floors": [sorted(r for r in rooms if floor[r] == f) for f in range(max(floor.values()) + 1)],
        "arrows_back_up": [f"{a} -> {b}" for a, b in arrows if floor[b] >= floor[a]],
        "room_circles": circles(rooms),
        "module_circles": [closing_cycles(graph, set(c)) for c in circles(graph)],
        "private_imports_across_rooms": across, "private_imports_within_room": len(private) - len(across),
    }
    out = [f"{fig['lines']} source lines (non-blank) in {len(modules)} modules; {len(statements)} import "
           f"statements within the package ({sum(statements)} inside functions), {fig['module_edges']} module edges",
           f"{len(rooms)} rooms on {len(fig['floors'])} floors, {len(arrows)} arrows"]
    out += [f"  floor {f}: {', '.join(fig['floors'][f])}" for f in reversed(range(len(fig["floors"])))]
    out += [f"{len(fig['arrows_back_up'])} arrows back up: {', '.join(fig['arrows_back_up']) or '-'}",
            f"{len(fig['room_circles'])} room circles:", *(f"  {', '.join(c)}" for c in fig["room_circles"]),
            f"{len(fig['module_circles'])} module circles:"]
    out += [("    " if i else "  ") + cycle for c in fig["module_circles"] for i, cycle in enumerate(c)]
    out += [f"{len(across)} private imports across rooms, {fig['private_imports_within_room']} within a room:",
            *(f"  {x}" for x in across)]
    if args.source:
        fig["between"] = sorted(reach(graph, args.source) & reach(reverse(graph), args.target))
        out.append(f"modules on import paths {args.source} -> {args.target}: {', '.join(fig['between']) or 'none'}")
    print("\n".join(out))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n")


if __name__ == "__main__":
    main()
