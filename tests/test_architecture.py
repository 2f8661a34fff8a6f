"""The shape of the package (issue 15): no import cycle among ganlab's modules, lazy imports
included, and a training entry point that reads top to bottom. The training loop
knows no remedy and no loss by name (issue 17)."""

import ast
import inspect
from pathlib import Path

import ganlab
from ganlab import train

REPO = Path(__file__).resolve().parents[1]

PACKAGE = Path(ganlab.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the ganlab modules it imports anywhere in its source (inside functions too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ganlab"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_ganlab():
    graph = import_graph()
    assert {"ganlab.train", "ganlab.gan", "ganlab.evaluation.toy", "ganlab.cli"} <= set(graph)
    assert "ganlab.gan" in graph["ganlab.train"]  # the graph sees imports
    assert cycles(graph) == []


def test_only_the_cli_prints_errors():
    """Commands raise GanlabError; `ganlab.cli.main` alone turns one into a line and an exit status."""
    graph = import_graph()
    assert [m for m, deps in graph.items() if "ganlab.cli" in deps] == ["ganlab.__main__"]  # `python -m ganlab`


def test_run_reads_top_to_bottom_in_under_80_lines():
    assert len(inspect.getsource(train.run).splitlines()) < 80


def test_the_training_loop_names_no_remedy_and_no_loss():
    """The loop (train.py, and replicas.py's vectorised step) calls the loss object and the remedy
    hooks and knows neither by name: no option name as a string, no loss or remedy class but the
    base classes and the combiner, and no module of ganlab.remedies besides the base and the stack."""
    import importlib

    from ganlab import losses, remedies
    from ganlab.config import options

    option_names = set(options("remedy")) | set(options("loss"))
    classes = {name for name, obj in vars(losses).items() if inspect.isclass(obj) and issubclass(obj, losses.Loss)}
    for module in options("remedy"):
        found = importlib.import_module(f"ganlab.remedies.{module}")
        classes |= {name for name, obj in vars(found).items()
                    if inspect.isclass(obj) and issubclass(obj, remedies.Remedy) and obj.__module__ == found.__name__}
    allowed = {"Loss", "Remedy", "RemedyStack"}
    for path in (PACKAGE / "train.py", PACKAGE / "replicas.py"):
        tree = ast.parse(path.read_text())
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
            n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not strings & option_names, (path.name, strings & option_names)
        assert not (names & classes) - allowed, (path.name, (names & classes) - allowed)
        assert not {m for m in imported if m.startswith("ganlab.remedies.")} - {"ganlab.remedies.stack",
                                                                                 "ganlab.remedies.base"}


def test_the_readme_layout_names_every_module_and_script():
    """README's Layout is where a maintainer starts: a module or a script it does not name is one a reader
    cannot find (a remedy's module is its option's name: docs/remedies.md lists them)."""
    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):text.index("## How to add")]
    package = REPO / "ganlab"
    modules = [p for p in package.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")
               and "configs" not in p.relative_to(package).parts and p.parent.name != "remedies"]
    modules += [p for p in (package / "remedies").glob("*.py") if p.stem in ("base", "stack", "conditional")]
    unnamed = [str(p.relative_to(REPO)) for p in [*modules, *(REPO / "scripts").iterdir()]
               if p.suffix in (".py", ".sh") and p.stem not in layout]
    assert unnamed == [], f"README's Layout does not name {unnamed}"
