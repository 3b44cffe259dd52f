"""One flag vocabulary across every tool, docs/cli.md generated from it, and bad input that
ends a tool with exit 2 and one line naming the path (nothing half-written)."""

import os
import re
import subprocess
import sys

import pytest

from fptflite import rundir
from fptflite.utils import cli, cli_doc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_tools_speak_one_vocabulary():
    tools = cli_doc.read_tools(REPO)
    assert len(tools) == 28
    assert cli_doc.vocabulary_problems(tools) == []
    names = {t.module for t in tools}
    assert {"training.train", "conversion.evaluate_tflite", "benchmarks.report",
            "fptflite.predict", "fptflite.models"} <= names
    # the concepts the tools used to spell several ways, now spelled once
    spelled = {f.name for t in tools for f in t.flags}
    assert not spelled & set(cli.REJECTED_SPELLINGS)
    assert {"model", "run_dir", "num_threads", "out_json", "det_file", "max_drop"} <= spelled


def _tree(tmp_path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in cli_doc.TOOL_FOLDERS:
        (tmp_path / folder).mkdir(exist_ok=True)
    return str(tmp_path)


TOOL = ('"""A tool."""\nfrom absl import flags\nfrom fptflite.utils import cli\n{body}\n'
        'if __name__ == "__main__":\n    pass\n')


@pytest.mark.parametrize("bodies, expected", [
    ({"a": 'X = flags.DEFINE_string("compare_to", None, "float model")'},
     "--compare_to: spelled --model everywhere else"),
    ({"a": 'X = flags.DEFINE_string("model", None, "again")'},
     "--model: a shared flag, defined here again"),
    ({"a": 'X = flags.DEFINE_integer("frames", 3, "n")',
      "b": 'Y = flags.DEFINE_integer("frames", 4, "n")'},
     "--frames is defined by 2 tools"),
    ({"a": 'X = cli.flag("max_drop", default=0.5)', "b": 'Y = cli.flag("max_drop", default=1.0)'},
     "--max_drop defaults to ['0.5', '1.0'] in different tools"),
    ({"a": 'import sys\nsys.path.insert(0, "..")'}, "edits sys.path"),
])
def test_a_second_spelling_fails(tmp_path, bodies, expected):
    root = _tree(tmp_path, {f"conversion/{name}.py": TOOL.format(body=body)
                            for name, body in bodies.items()})
    tools = [cli_doc.read_tool(root, os.path.join("conversion", f"{n}.py")) for n in bodies]
    problems = cli_doc.vocabulary_problems(tools)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_shared_flag_keeps_its_one_default():
    with pytest.raises(ValueError, match="--det_score_threshold keeps its one default"):
        cli.flag("det_score_threshold", default=0.3)


def test_docs_cli_md_is_generated_from_the_definitions():
    with open(os.path.join(REPO, cli_doc.DOC_FILE)) as f:
        on_disk = f.read()
    assert on_disk == cli_doc.render(cli_doc.read_tools(REPO)), \
        "docs/cli.md is stale: run python -m fptflite.utils.cli_doc"


def _tool(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_bad_paths_exit_2_naming_the_path_and_what_was_expected(tmp_path):
    """A run directory without a model, a file where a directory is expected, nothing at
    all: one line naming the path, exit 2, and nothing written."""
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    (empty_run / rundir.CONFIG_FILE).write_text('{"quantize": false}')
    a_file = tmp_path / "model.keras"
    a_file.write_text("not a model")
    out = tmp_path / "out"
    cases = [
        (("conversion.convert", f"--model={empty_run}", f"--out_dir={out}"),
         f"error: {empty_run} holds no model: best.keras not found (the run has not "
         "finished an evaluation yet)"),
        (("conversion.qat", f"--model={a_file}"),
         f"error: {a_file}: expected a run directory (one holding config.json), got a file"),
        (("conversion.export_android", f"--model={tmp_path / 'nothing'}", f"--out_dir={out}"),
         f"error: {tmp_path / 'nothing'}: no such run directory or model file"),
        (("conversion.evaluate_tflite", f"--tflite={a_file}", f"--model={empty_run}"),
         f"error: --tflite={a_file}: expected a .tflite file"),
    ]
    for args, message in cases:
        done = _tool(*args)
        assert done.returncode == 2, (args, done.stderr[-800:])
        assert done.stderr.strip().splitlines()[-1] == message, done.stderr[-800:]
        assert not out.exists()


DOCUMENTS = ("Makefile", "README.md", "BENCHMARKS.md", "android_demo_assets/README.md",
             *(os.path.join("docs", n) for n in ("training.md", "quantization.md",
                                                "deployment.md", "evaluation.md", "design.md",
                                                "ablation.md")))
ABSL_FLAGS = {"helpshort", "helpfull", "help", "flagfile", "helpxml"}
_COMMAND = re.compile(r"(?:\$\(PY\)|python3?) -m ([\w.]+)"
                      r"((?:(?!python3? -m |\$\(PY\) -m )[^\n`|]|\\\n)*)")


def documented_commands(root: str) -> list[tuple[str, str, list[str]]]:
    """(document, module, flag names) of every ``python -m MODULE --flag ...`` written in the
    Makefile, README.md, BENCHMARKS.md and docs/ (lines joined at backslashes; optional
    flags in [brackets] and --[no]bool flags included)."""
    out = []
    for doc in DOCUMENTS:
        path = os.path.join(root, doc)
        if not os.path.isfile(path):
            continue
        text = open(path).read()
        for module, rest in _COMMAND.findall(text):
            names = [n.removeprefix("[no]") for n in re.findall(r"--((?:\[no\])?\w+)", rest)]
            out.append((doc, module, names))
    return out


def test_every_documented_command_uses_flags_its_tool_defines():
    """The Makefile's, README's, BENCHMARKS.md's and the guides' commands name only flags
    their tool has (a renamed flag left in a document fails here, as make demo would)."""
    tools = {t.module: t for t in cli_doc.read_tools(REPO)}
    checked, wrong = 0, []
    for doc, module, names in documented_commands(REPO):
        if module not in tools:
            continue  # pytest, pip, venv, http.server ...
        known = {f.name for f in tools[module].flags} | ABSL_FLAGS
        known |= {"no" + f.name for f in tools[module].flags if f.kind == "bool"}
        checked += 1
        wrong += [f"{doc}: python -m {module} --{n}" for n in names if n not in known]
    assert checked >= 40 and wrong == [], wrong


def test_the_check_catches_a_renamed_flag(tmp_path):
    (tmp_path / "Makefile").write_text("demo:\n\t$(PY) -m conversion.demo --out_dir=runs/demo\n")
    [(doc, module, names)] = documented_commands(str(tmp_path))
    assert (module, names) == ("conversion.demo", ["out_dir"])
    demo = cli_doc.read_tool(REPO, "conversion/demo.py")
    assert "out_dir" not in {f.name for f in demo.flags}
