"""The modules of tf_centernet/data import each other one way: no import circle.

Every import is counted, module-level or inside a function (a lazy import
is a circle all the same), parsed from the source with `ast`.
"""

import ast
import os

import tf_centernet.data

DATA = os.path.dirname(tf_centernet.data.__file__)
PACKAGE = "tf_centernet.data"


def _imports(path):
    """Names of the tf_centernet.data modules a file imports (anywhere in it)."""
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE:  # from tf_centernet.data import x: x may be a module
                names.update(f"{PACKAGE}.{alias.name}" for alias in node.names)
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n[len(PACKAGE) + 1:].split(".")[0] for n in names if n.startswith(PACKAGE + ".")}


def data_graph():
    """dict module -> set of the data modules it imports (``__init__`` left out: it re-exports)."""
    modules = {f[:-3] for f in os.listdir(DATA) if f.endswith(".py") and f != "__init__.py"}
    return {m: _imports(os.path.join(DATA, m + ".py")) & modules for m in modules}


def find_cycle(graph):
    """One cycle of `graph` as a list of nodes (first repeated last), or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_find_cycle_finds_a_lazy_circle_and_accepts_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_imports_inside_functions_are_counted(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from tf_centernet.data.coco import CocoDataset\n    import tf_centernet.data.voc\n")
    assert _imports(str(path)) == {"coco", "voc"}


def test_data_modules_have_no_import_circle():
    graph = data_graph()
    assert {"base", "coco", "voc", "tfrecord", "records", "pipeline", "check", "classes"} <= set(graph)
    assert find_cycle(graph) is None, f"import circle in tf_centernet/data: {' -> '.join(find_cycle(graph))}"


def test_readers_sit_on_base_and_below_the_registry():
    graph = data_graph()
    assert graph["base"] <= {"paths"}, graph["base"]
    for reader in ("coco", "voc", "tfrecord"):
        assert "base" in graph[reader]
        assert not graph[reader] & {"records", "pipeline", "check"}, (reader, graph[reader])
    assert {"coco", "voc", "tfrecord"} <= graph["records"]


def test_data_modules_stay_under_450_lines():
    long = {f: n for f in os.listdir(DATA) if f.endswith(".py")
            for n in [sum(1 for _ in open(os.path.join(DATA, f), encoding="utf-8"))] if n > 450}
    assert not long, long
