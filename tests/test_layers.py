"""The library's layers: no import circle between amms_lib modules, counting imports inside
functions (a late import only hides a circle), and a network builds without the data,
image or runtime code."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "amms_lib"


def _is_main_block(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``: runs only when the module is the program, as a
    separate module object, so an import there cannot close a circle."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The amms_lib modules ``path`` imports anywhere (top level, functions, classes)."""
    found: set[str] = set()
    todo = [n for n in ast.parse(path.read_text()).body if not _is_main_block(n)]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "amms_lib":
                found |= {a.name for a in node.names if a.name in modules}
            elif node.module.startswith("amms_lib."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("amms_lib.")}
        todo.extend(ast.iter_child_nodes(node))
    return found - {path.stem}


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in LIB.glob("*.py")}
    return {p.stem: imports_of(p, modules) for p in LIB.glob("*.py")}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself, with the path back."""
    found = []
    for start in sorted(graph):
        path, seen = [start], set()
        stack = [(start, iter(sorted(graph[start])))]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                continue
            if nxt == start:
                found.append([*path, start])
                break
            if nxt not in seen:
                seen.add(nxt)
                path.append(nxt)
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
    return found


def test_the_graph_reader_sees_late_imports_and_circles(tmp_path):
    """The checker itself: a late import counts, a __main__ block does not, and a
    two-module circle is found."""
    (tmp_path / "a.py").write_text("def f():\n    from amms_lib import b\n"
                                   "if __name__ == '__main__':\n    import amms_lib.c\n")
    assert imports_of(tmp_path / "a.py", {"a", "b", "c"}) == {"b"}
    assert circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b", "a"],
                                                             ["b", "a", "b"]]


def test_no_import_circle_between_library_modules():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_building_a_network_imports_no_data_image_or_runtime_code():
    """amms_lib.resize stays: MATLAB bicubic is the first layer of SRCNN, VDSR, MemNet."""
    code = ("import sys\nfrom amms_lib.models import build_model\n"
            "for m in ('amms', 'srcnn', 'vdsr', 'lapsrn', 'memnet'):\n"
            "    build_model(m, 2)\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('amms_lib.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=LIB.parent).stdout.split()
    assert not {f"amms_lib.{m}" for m in ("data", "images", "download", "runtime")} & set(out)
