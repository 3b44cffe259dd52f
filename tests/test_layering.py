"""The package layers: each module imports only from its own layer or below, never upwards.

    keypoints, codec, losses, utils, rundir, results, visualization -> data -> models
    -> quantization -> tflite -> evaluation -> serving -> tasks -> binaries (fptflite.predict,
    training/, conversion/, benchmarks/)

The scan reads every import of the project's Python files, at module level and inside
functions, with the ``ast`` module (nothing is imported). Imports placed inside functions are
allowed only for optional heavy dependencies, each with a comment giving the reason on its
line or above its block of imports.
"""

from __future__ import annotations

import ast
import os
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS: tuple[tuple[str, ...], ...] = (
    ("fptflite", "fptflite.keypoints", "fptflite.codec", "fptflite.losses", "fptflite.utils",
     "fptflite.rundir", "fptflite.results",
     "fptflite.visualization"),
    ("fptflite.data",),
    ("fptflite.models",),
    ("fptflite.quantization",),
    ("fptflite.tflite",),
    ("fptflite.evaluation",),
    ("fptflite.serving",),
    ("fptflite.tasks",),
    ("fptflite.predict", "fptflite.serve_web", "training", "conversion", "benchmarks"),
)
SOURCES = ("fptflite", "training", "conversion", "benchmarks")


def layer_of(module: str) -> int | None:
    """The layer index of a project module (the longest matching prefix), None if foreign."""
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def _module_name(root: str, path: str) -> str:
    rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    return rel.removesuffix(".__init__")


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.module == "fptflite":  # from fptflite import data -> fptflite.data
        return [f"fptflite.{a.name}" for a in node.names]
    return [node.module or ""]


def scan(root: str, sources=SOURCES) -> tuple[list[str], list[str], int]:
    """(upward imports, function-local imports without a reason, function-local imports of
    project modules) of every .py file under ``root``'s ``sources`` folders."""
    upward, unexplained, local_project = [], [], 0
    for top in sources:
        for folder, _, files in os.walk(os.path.join(root, top)):
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                lines = text.splitlines()
                mod = _module_name(root, path)
                src = layer_of(mod)
                for node, in_function in _imports(ast.parse(text)):
                    where = f"{os.path.relpath(path, root)}:{node.lineno}"
                    for target in _imported(node):
                        dst = layer_of(target)
                        if src is not None and dst is not None and dst > src:
                            upward.append(f"{where} {mod} (layer {src}) imports {target} "
                                          f"(layer {dst})")
                        if in_function and dst is not None:
                            local_project += 1
                    if in_function and not _has_reason(lines, node.lineno):
                        unexplained.append(f"{where} {ast.unparse(node)}")
    return upward, unexplained, local_project


def _imports(tree: ast.AST):
    """(import node, inside a function) pairs."""
    stack = [(tree, False)]
    while stack:
        node, in_fn = stack.pop()
        for child in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_fn
            stack.append((child, fn))


def _has_reason(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or above its block of consecutive imports."""
    if "#" in lines[lineno - 1]:
        return True
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith(("import ", "from ")):
        i -= 1
    return i >= 0 and lines[i].strip().startswith("#")


def test_no_module_imports_from_a_higher_layer():
    upward, _, _ = scan(ROOT)
    assert upward == [], "upward imports:\n" + "\n".join(upward)


def test_function_local_imports_carry_a_reason():
    _, unexplained, local_project = scan(ROOT)
    assert unexplained == [], "imports inside functions without a reason:\n" + \
        "\n".join(unexplained)
    print(f"function-local imports of project modules: {local_project}")


@pytest.mark.parametrize("body, expect_upward, expect_unexplained", [
    ("from fptflite.tasks import trainer\n", 1, 0),  # data -> tasks at module level
    ("def f():\n    from fptflite.serving import video\n", 1, 1),  # inside a function
    ("def f():\n    # lazy: TensorFlow only when called\n    import tensorflow\n", 0, 0),
    ("from fptflite import codec, keypoints\n", 0, 0),  # the ground: allowed
    ("from fptflite import tasks\n", 1, 0),  # "from fptflite import" resolves the package
])
def test_the_scan_catches_an_upward_import(tmp_path, body, expect_upward, expect_unexplained):
    pkg = tmp_path / "fptflite" / "data"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text(textwrap.dedent(body))
    upward, unexplained, _ = scan(str(tmp_path), ("fptflite",))
    assert len(upward) == expect_upward, upward
    assert len(unexplained) == expect_unexplained, unexplained


def test_every_project_package_has_a_layer():
    packages = {d for d in os.listdir(os.path.join(ROOT, "fptflite"))
                if not d.startswith(("_", ".")) and (d.endswith(".py") or os.path.isfile(
                    os.path.join(ROOT, "fptflite", d, "__init__.py")))}
    missing = [p for p in packages if layer_of("fptflite." + p.removesuffix(".py")) in (None, 0)
               and "fptflite." + p.removesuffix(".py") not in LAYERS[0]]
    assert missing == [], f"packages without a layer (add them to LAYERS): {missing}"
