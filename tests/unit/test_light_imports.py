"""The processes that must start fast import neither torch nor vLLM: the model manager
(it starts the per-node stores and pools), the replicas and the ingress; and vLLM has
one importer."""

from __future__ import annotations

import json
import subprocess
import sys

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


# Run in a fresh interpreter: CPython 3.11's ``ast.parse`` can fail with "AST constructor
# recursion depth mismatch" in a process where an earlier test hit a RecursionError on
# purpose (the ingress's deeply nested bodies).
_IMPORTERS = """
import ast, json, pathlib, sllm_ray
package = pathlib.Path(sllm_ray.__file__).parent
importers = set()
for source in package.rglob("*.py"):
    for node in ast.walk(ast.parse(source.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        if any(name == "vllm" or name.startswith("vllm.") for name in names):
            importers.add(source.relative_to(package).as_posix())
print(json.dumps(sorted(importers)))
"""


def test_vllm_is_imported_only_by_its_boundary_module() -> None:
    """Every vLLM import goes through ``engine/vllm_compat.py``: an upgrade is a one-file change."""
    done = subprocess.run([sys.executable, "-c", _IMPORTERS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == ["engine/vllm_compat.py"]
