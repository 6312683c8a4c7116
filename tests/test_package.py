"""The package's shape: imports go down the road (CLI -> recipes -> train / infer -> models / data
-> labels), the loop and its helpers stay short, and the class count is written once."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "maskcls"
MAX_FUNCTION_LINES = 60

# What each part of the package may not import: nothing imports a stage above its own.
FORBIDDEN = {
    "labels": {"*"}, "errors": {"*"}, "fileio": {"*"}, "htmlpage": {"*"}, "imageio": {"*"},  # "*": nothing but errors
    "faces": {"data", "models", "loss", "optim", "scheduler", "config", "checkpoint", "train", "infer", "fit", "demo", "cli", "serve"},
    "metrics": {"data", "models", "config", "checkpoint", "train", "infer", "fit", "demo", "cli"},
    "data": {"models", "loss", "optim", "scheduler", "config", "checkpoint", "train", "infer", "fit", "demo", "cli", "eda", "report"},
    "models": {"config", "checkpoint", "loss", "optim", "scheduler", "train", "infer", "fit", "demo", "cli", "eda", "report"},
    "loss": {"config", "checkpoint", "train", "infer", "fit", "demo", "cli"},
    "optim": {"config", "checkpoint", "train", "infer", "fit", "demo", "cli"},
    "scheduler": {"config", "checkpoint", "train", "infer", "fit", "demo", "cli"},
    "config": {"checkpoint", "train", "infer", "fit", "demo", "cli", "eda", "report"},
    "checkpoint": {"train", "infer", "fit", "demo", "cli"},
    "eda": {"train", "infer", "fit", "demo", "cli"},
    "report": {"train", "infer", "fit", "demo", "cli"},
    "infer": {"train", "fit", "tune", "demo", "cli"},  # serving a model never pulls in the training engine
    "train": {"fit", "tune", "demo", "cli"},
    "fit": {"tune", "demo", "cli"},
    "tune": {"fit", "serve", "demo", "cli"},  # a trial is an ordinary training run
    "serve": {"train", "fit", "tune", "demo", "cli"},  # a served model needs no training code
    "demo": {"cli"},
}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield path, parts[:-1] if parts[-1] == "__init__" else parts, parts[-1] == "__init__"


def imported_stages(path: Path, name: tuple, is_package: bool) -> set[str]:
    """The top-level maskcls parts a module imports, at any depth in the file (lazy imports too)."""
    stages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(name if is_package else name[:-1])[: len(name) - node.level + (1 if is_package else 0)]
            target = base + (node.module.split(".") if node.module else [])
            if len(target) > 1:
                stages.add(target[1])
            else:
                stages.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("maskcls."):
            stages.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            stages.update(a.name.split(".")[1] for a in node.names if a.name.startswith("maskcls."))
    return stages


@pytest.mark.parametrize("path, name, is_package", list(modules()), ids=lambda v: "/".join(v) if isinstance(v, tuple) else "")
def test_imports_only_go_down_the_road(path, name, is_package):
    if len(name) < 2:
        return
    stage = name[1]
    imported = imported_stages(path, name, is_package) - {stage}
    forbidden = FORBIDDEN.get(stage, set())
    bad = imported - {"errors"} if "*" in forbidden else imported & forbidden
    assert not bad, f"{path.relative_to(PACKAGE.parent)} ({stage}) imports {sorted(bad)}"


def test_the_checker_sees_imports():
    engine = PACKAGE / "train" / "engine.py"
    assert {"config", "models", "infer", "data", "checkpoint"} <= imported_stages(engine, ("maskcls", "train", "engine"), False)


def test_no_function_runs_past_a_screen():
    long = []
    for path, _, _ in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_the_class_count_is_written_once():
    literal = []
    for path, _, _ in modules():
        tree = ast.parse(path.read_text())
        named = {id(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)}  # e.g. YOUNGEST_AGE = 18
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == 18 and type(node.value) is int and id(node) not in named:
                literal.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not literal, f"write labels.NUM_CLASSES, not 18: {literal}"
