"""The package's shape: no import cycle between its modules, and training never loads the web stack (or gRPC)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from conftest import ROOT

PACKAGE = ROOT / "src" / "signs_resnet"
WEB_STACK = {"fastapi", "starlette", "uvicorn", "prometheus_client", "multipart", "python_multipart", "grpc",
             "swagger_ui_bundle"}


def package_imports() -> dict[str, set[str]]:
    """Each module's imports of the package's other modules, at the top or inside functions alike."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("signs_resnet."):
                found.add(node.module.split(".")[1])
        graph[path.stem] = {name.split(".")[0] for name in found} & modules - {path.stem}
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
    assert {"serve", "kserve", "grpc_service", "tensors", "runtime", "cli"} <= set(graph)
    assert "runtime" in graph["kserve"] and "tensors" in graph["kserve"] & graph["grpc_service"]
    assert cycles(graph) == []


def test_signs_train_never_imports_the_web_stack(signs_slice, tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SIGNS_")} | {"PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run([sys.executable, "-m", "signs_resnet", "train", "--data", str(signs_slice), "--out",
                             str(tmp_path), "--epochs", "1", "--no-progress", "--checkpoint-every-s", "0"],
                            capture_output=True, text=True, timeout=300, env=environment, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "signs_resnet.train" in imported and (tmp_path / "model.safetensors").exists()
    assert sorted(name for name in imported if name.split(".")[0] in WEB_STACK) == []
