"""ServerlessLLM's own CLI (``sllm``, package ``serverless-llm`` 0.8.0), run unchanged.

Run by ``test_serverlessllm_cli.py`` in a virtual environment of its own (``make
sllm-cli``): the package pins Ray 2.46 and needs ``serverless-llm-store``, a C++/CUDA build,
neither of which fits beside this project. Its ``deploy``, ``update``, ``delete`` and
``status`` commands only send HTTP requests (``requests``); the modules its CLI imports for
``sllm start`` alone (Ray, uvicorn, its controller and app) are stood in for here, empty.
"""

import sys
import types

for name in ("ray", "uvicorn", "sllm.app_lib", "sllm.controller"):
    stub = types.ModuleType(name)
    stub.create_app = stub.SllmController = None  # the names `sllm start` would use
    sys.modules[name] = stub

from sllm.cli.clic import cli  # noqa: E402  (after the stand-ins)

if __name__ == "__main__":
    cli()
