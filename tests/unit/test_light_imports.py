"""The processes that must start fast import neither torch nor vLLM: the model manager
(it starts the per-node stores and pools), the replicas and the ingress; and vLLM has
one importer."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import sllm_ray

HEAVY = ("torch", "vllm", "safetensors", "transformers")


def test_the_manager_replica_and_ingress_import_no_torch_or_vllm() -> None:
    code = (
        "import json, sys\n"
        "import sllm_ray.control.manager, sllm_ray.serving.model_server, sllm_ray.api.ingress\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_vllm_is_imported_only_by_its_boundary_module() -> None:
    """Every vLLM import goes through ``engine/vllm_compat.py``: an upgrade is a one-file change."""
    package = Path(sllm_ray.__file__).parent
    importers = []
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(name == "vllm" or name.startswith("vllm.") for name in names):
                importers.append(source.relative_to(package).as_posix())
    assert set(importers) == {"engine/vllm_compat.py"}
