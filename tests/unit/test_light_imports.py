"""The processes that must start fast import neither torch nor vLLM: the model manager
(it starts the per-node stores and pools), the replicas and the ingress."""

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
