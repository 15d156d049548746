"""The package's shape: subpackages by job that import one way (no cycle, each layer only below it), no module
over 400 lines, and training never loads the web stack (or gRPC)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import ROOT, command_environment

PACKAGE = ROOT / "src" / "signs_resnet"
WEB_STACK = {"fastapi", "starlette", "uvicorn", "prometheus_client", "multipart", "python_multipart", "grpc",
             "swagger_ui_bundle", "websockets"}
# What each part of the package may not import: the layers, lowest first (README, "Module map").
FORBIDDEN = {
    "artifact": {"model", "model_file", "hands", "data", "answer", "training", "inference", "serving", "cli"},
    "scores": {"model", "model_file", "hands", "data", "answer", "training", "inference", "serving", "cli"},
    "extras": {"model", "model_file", "hands", "data", "answer", "training", "inference", "serving", "cli"},
    "user_cache": {"model", "model_file", "hands", "data", "answer", "training", "inference", "serving", "cli"},
    "model": {"model_file", "hands", "data", "answer", "training", "inference", "serving", "cli"},
    "hands": {"model_file", "data", "answer", "training", "inference", "serving", "cli"},
    "model_file": {"hands", "data", "answer", "training", "inference", "serving", "cli"},
    "data": {"model_file", "answer", "training", "inference", "serving", "cli"},
    "answer": {"training", "inference", "serving", "cli"},
    "smoothing": {"model", "model_file", "hands", "data", "answer", "training", "inference", "serving", "cli"},
    "training": {"answer", "inference", "serving", "cli"},
    "inference": {"training", "serving", "cli"},
    "serving": {"training", "cli"},
}


def module_names() -> set[str]:
    """Every module of the package, dotted from it ("serving.app"); a subpackage by its name ("serving")."""
    return {".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
            for path in PACKAGE.rglob("*.py")} - {"__init__"}


def package_imports() -> dict[str, set[str]]:
    """Each module's imports of the package's other modules, at the top or inside functions alike."""
    modules = module_names()
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{path}: a relative import; the package imports itself by absolute names")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("signs_resnet"):
                base = node.module.removeprefix("signs_resnet").lstrip(".")
                for alias in node.names:
                    full = f"{base}.{alias.name}".lstrip(".")
                    found.add(full if full in modules else base or "__init__")
        graph[name] = found - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycle_in_the_package():
    graph = package_imports()
    assert {"serving.app", "serving.kserve", "serving.grpc_service", "serving.tensors", "cli", "answer"} <= set(graph)
    assert "serving.runtime" in graph["serving.kserve"]
    assert "serving.tensors" in graph["serving.kserve"] & graph["serving.grpc_service"]
    assert cycles(graph) == []


def test_each_layer_imports_only_below_it():
    broken = sorted(f"{module} imports {target}" for module, targets in package_imports().items()
                    for target in targets
                    if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], set()))
    assert broken == []
    # the rule could fail: training imports the model file and data, never the other way round
    assert {"model_file", "data.datasets"} <= package_imports()["training.train"]


def test_every_path_answers_through_the_one_rule():
    graph = package_imports()
    assert {module for module, targets in graph.items() if "answer" in targets} >= {
        "serving.photos", "serving.tensors", "inference.classify", "serving.client", "cli"}
    assert "serving.photos" in graph["serving.app"] & graph["serving.stream"]  # /predict and /stream: one path


def test_no_module_over_400_lines():
    lengths = {path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines())
               for path in PACKAGE.rglob("*.py")}
    assert len(lengths) > 30
    assert {name: n for name, n in lengths.items() if n > 400} == {}


@pytest.mark.slow  # a training process
def test_signs_train_never_imports_the_web_stack(tiny_slice, tmp_path):
    environment = command_environment({"PYTHONPROFILEIMPORTTIME": "1"})
    result = subprocess.run([sys.executable, "-m", "signs_resnet", "train", "--data", str(tiny_slice), "--out",
                             str(tmp_path), "--epochs", "1", "--no-progress", "--checkpoint-every-s", "0"],
                            capture_output=True, text=True, timeout=300, env=environment, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "signs_resnet.training.train" in imported and (tmp_path / "model.safetensors").exists()
    assert sorted(name for name in imported if name.split(".")[0] in WEB_STACK) == []


def test_a_missing_extra_names_the_extra_that_installs_it(monkeypatch):
    from signs_resnet import extras

    assert extras.require("json", "anything").dumps([1]) == "[1]"
    monkeypatch.setitem(extras.EXTRAS, "no_such_module_here", "plots")
    with pytest.raises(extras.MissingExtra, match=r"^drawing needs no_such_module_here, which the \[plots\] extra "
                                                  r"installs: pip install 'signs-resnet\[plots\]'$"):
        extras.require("no_such_module_here.sub", "drawing")
    with pytest.raises(ModuleNotFoundError):  # a module no extra installs: a broken install, said as it is
        extras.require("not_an_extra_module", "anything")
