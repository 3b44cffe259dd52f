"""Every tool's flags, read from the source (nothing is imported), and docs/cli.md from them.

    python -m fptflite.utils.cli_doc [--check]

A tool is a module run as ``python -m package.module`` (training/, conversion/, benchmarks/,
and the binaries inside fptflite/). Its flags are its ``cli.flag`` / ``cli.define`` calls
(shared, ``fptflite.utils.cli``) and its own ``flags.DEFINE_*`` calls. ``vocabulary_problems``
is what tests/test_cli.py asserts empty: two tools defining the same flag themselves, a tool
redefining a shared flag, a rejected spelling, a tool editing ``sys.path``.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import sys

from fptflite.utils import cli
from fptflite.utils.io import write_bytes_atomic

TOOL_FOLDERS = ("training", "conversion", "benchmarks")
# Binaries inside the library (their module path, run with python -m).
LIBRARY_TOOLS = ("fptflite/predict.py", "fptflite/serve_web.py", "fptflite/models/__main__.py",
                 "fptflite/data/synthetic.py", "fptflite/data/synthetic_mpii.py",
                 "fptflite/utils/cli_doc.py")
DOC_FILE = os.path.join("docs", "cli.md")


@dataclasses.dataclass(frozen=True)
class ToolFlag:
    """One flag of one tool: shared (defined by ``cli``) or the tool's own."""

    name: str
    shared: bool
    kind: str
    default: str
    help: str
    line: int


@dataclasses.dataclass
class Tool:
    module: str
    path: str
    summary: str
    flags: list[ToolFlag]
    edits_sys_path: bool


def tool_paths(root: str) -> list[str]:
    """The tools' source files under ``root`` (relative paths, sorted)."""
    out = list(LIBRARY_TOOLS)
    for folder in TOOL_FOLDERS:
        for name in sorted(os.listdir(os.path.join(root, folder))):
            if name.endswith(".py") and name != "__init__.py":
                path = os.path.join(folder, name)
                with open(os.path.join(root, path)) as f:
                    if "__main__" in f.read():
                        out.append(path)
    return sorted(p for p in out if os.path.isfile(os.path.join(root, p)))


def _module(path: str) -> str:
    return path[:-3].replace(os.sep, ".").removesuffix(".__main__")


def _text(node: ast.AST | None, src: str) -> str:
    if node is None:
        return ""
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return ast.get_source_segment(src, node) or ""
    return value if isinstance(value, str) else repr(value)


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _shared(call: ast.Call, src: str) -> list[ToolFlag]:
    """The flags of a ``cli.flag(name, ...)`` or ``cli.define(n1, n2, ..., defaults=...)``."""
    out = []
    names = [a.value for a in call.args if isinstance(a, ast.Constant)]
    defaults, notes = {}, {}
    if call.func.attr == "flag":
        if _keyword(call, "default") is not None:
            defaults[names[0]] = _text(_keyword(call, "default"), src)
        if _keyword(call, "help_note") is not None:
            notes[names[0]] = _text(_keyword(call, "help_note"), src)
    else:
        for kw, table in (("defaults", defaults), ("help_notes", notes)):
            node = _keyword(call, kw)
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    table[ast.literal_eval(k)] = _text(v, src)
    for name in names:
        spec = cli.SHARED_FLAGS.get(name)
        kind = spec.kind if spec else "?"
        default = defaults.get(name, repr(spec.default) if spec else "?")
        text = (spec.help if spec else "(not a shared flag)") + (
            f" {notes[name]}" if name in notes else "")
        out.append(ToolFlag(name, True, kind, default, text, call.lineno))
    return out


def read_tool(root: str, path: str) -> Tool:
    """A tool's summary (its docstring's first line) and flags, from its source."""
    with open(os.path.join(root, path)) as f:
        src = f.read()
    tree = ast.parse(src)
    summary = (ast.get_docstring(tree) or "").strip().splitlines()[0:1]
    found, edits = [], False
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        if not isinstance(owner, ast.Name):
            if (isinstance(owner, ast.Attribute) and owner.attr == "path"
                    and node.func.attr in ("insert", "append")):
                edits = edits or ast.unparse(owner) == "sys.path"
            continue
        if owner.id == "cli" and node.func.attr in ("flag", "define"):
            found.extend(_shared(node, src))
        elif owner.id == "flags" and node.func.attr.startswith("DEFINE_") and node.args:
            name = _text(node.args[0], src)
            default = node.args[1] if len(node.args) > 1 else _keyword(node, "default")
            help_node = node.args[-1] if len(node.args) > 2 else _keyword(node, "help")
            found.append(ToolFlag(name, False, node.func.attr.removeprefix("DEFINE_"),
                                  ast.get_source_segment(src, default) if default else "None",
                                  _text(help_node, src), node.lineno))
    found.sort(key=lambda f: f.line)
    return Tool(_module(path), path, summary[0] if summary else "", found, edits)


def read_tools(root: str) -> list[Tool]:
    return [read_tool(root, p) for p in tool_paths(root)]


def vocabulary_problems(tools: list[Tool]) -> list[str]:
    """Every way the tools break the one-vocabulary rule (empty: none).

    - a tool defines a shared flag itself (it must ask ``cli`` for it);
    - two tools define the same own flag (it belongs in ``cli.SHARED_FLAGS``);
    - a rejected spelling of a shared concept (``cli.REJECTED_SPELLINGS``);
    - a shared flag whose default is a library constant given differently by two tools;
    - a tool that edits ``sys.path`` (every tool runs as ``python -m package.module``).
    """
    problems, owners, constants = [], {}, {}
    for tool in tools:
        if tool.edits_sys_path:
            problems.append(f"{tool.path}: edits sys.path (run it as python -m {tool.module})")
        for f in tool.flags:
            where = f"{tool.path}:{f.line} --{f.name}"
            if f.name in cli.REJECTED_SPELLINGS:
                problems.append(f"{where}: spelled --{cli.REJECTED_SPELLINGS[f.name]} "
                                "everywhere else")
            if not f.shared and f.name in cli.SHARED_FLAGS:
                problems.append(f"{where}: a shared flag, defined here again: use "
                                f"cli.flag({f.name!r})")
            if not f.shared:
                owners.setdefault(f.name, []).append(where)
            if f.shared and f.name in ("max_drop", "num_calibration") and f.default != "None":
                constants.setdefault(f.name, set()).add(f.default)
    for name, places in owners.items():
        if len(places) > 1:
            problems.append(f"--{name} is defined by {len(places)} tools ({', '.join(places)}): "
                            "one concept, one definition in fptflite/utils/cli.py")
    for name, values in constants.items():
        if len(values) > 1:
            problems.append(f"--{name} defaults to {sorted(values)} in different tools")
    return problems


def render(tools: list[Tool]) -> str:
    """docs/cli.md: the shared vocabulary, then every tool with its flags."""
    lines = ["# Command-line tools", "",
             "Generated by `python -m fptflite.utils.cli_doc` from the flag definitions "
             "(`fptflite/utils/cli.py` and each tool's own); `tests/test_cli.py` fails when it "
             "is stale or when two tools spell one concept differently. Every tool runs from "
             "the checkout as `python -m MODULE`.", "",
             "## The shared vocabulary", "",
             "| flag | type | default | meaning |", "|---|---|---|---|"]
    for name, spec in cli.SHARED_FLAGS.items():
        lines.append(f"| `--{name}` | {spec.kind} | `{spec.default!r}` | {spec.help} |")
    lines += ["", "Spellings no tool uses: " + ", ".join(
        f"`--{k}` (say `--{v}`)" for k, v in cli.REJECTED_SPELLINGS.items()) + ".", ""]
    for tool in tools:
        lines += [f"## `python -m {tool.module}`", "", tool.summary, "",
                  "| flag | shared | type | default | meaning |", "|---|---|---|---|---|"]
        for f in tool.flags:
            help_text = f.help.replace("|", "\\|").replace("\n", " ")
            default = f.default.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `--{f.name}` | {'yes' if f.shared else ''} | {f.kind} | "
                         f"`{default}` | {help_text} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    root = os.getcwd()
    text = render(read_tools(root))
    path = os.path.join(root, DOC_FILE)
    if "--check" in argv:
        with open(path) as f:
            stale = f.read() != text
        print(f"{DOC_FILE} is " + ("stale: run python -m fptflite.utils.cli_doc" if stale
                                   else "up to date"))
        return int(stale)
    write_bytes_atomic(path, text.encode())
    print(f"wrote {DOC_FILE}: {len(read_tools(root))} tools")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
