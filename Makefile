# sllm_ray developer entry points. `make run` serves the demo model, `make test` runs the tests;
# both set up what is missing first (virtual environment, demo model).
PYTHON ?= python3
VENV ?= .venv
EXTRA ?= cpu
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sllm-ray-$(EXTRA)
DEMO_MODEL := models/tiny-llama

export RAY_USAGE_STATS_ENABLED ?= 0

SLLM_CLI_VENV := .venv-sllm-cli
SCHEMATHESIS_VENV := .venv-schemathesis

.PHONY: setup tools demo-model sllm-cli run test test-fast unit lint contract bench clean

setup: $(STAMP) tools

# Debian's tools the tests run for real, installed when missing: the compose validator
# (`docker-compose config -q`, tests/unit/test_deploy_manifests.py), shellcheck (the
# container's entry point), and Prometheus with promtool (tests/e2e/test_metrics.py queries
# the dashboard's PromQL through it). Without apt-get (or root) the tests that need them
# say so and skip.
DEB_TOOLS := docker-compose:docker-compose shellcheck:shellcheck prometheus:prometheus promtool:prometheus
tools:
	@missing=$$(for t in $(DEB_TOOLS); do command -v $${t%%:*} >/dev/null || echo $${t#*:}; done | sort -u); \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
		else echo "make tools: missing $$missing (apt-get install as root); their tests will skip"; fi; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[$(EXTRA),dev]'
	# PyPI's torchvision/torchaudio/torchcodec break `import vllm` beside the CPU torch.
	if [ "$(EXTRA)" = cpu ]; then $(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec; fi
	touch $(STAMP)

# ServerlessLLM's own CLI (serverless-llm 0.8.0) for tests/e2e/test_serverlessllm_cli.py, in
# an environment of its own: the package pins Ray 2.46 and needs serverless-llm-store (a
# C++/CUDA build), which only its `sllm start` uses; deploy/status/delete need requests.
sllm-cli: $(SLLM_CLI_VENV)/bin/sllm-ready

$(SLLM_CLI_VENV)/bin/sllm-ready:
	test -x $(SLLM_CLI_VENV)/bin/python || $(PYTHON) -m venv $(SLLM_CLI_VENV)
	$(SLLM_CLI_VENV)/bin/pip install -q --no-deps serverless-llm==0.8.0
	$(SLLM_CLI_VENV)/bin/pip install -q click requests==2.32.2
	touch $@

demo-model: $(DEMO_MODEL)/sllm_tiny_model.json

$(DEMO_MODEL)/sllm_tiny_model.json: | $(STAMP)
	$(PY) -m sllm_ray.tools.tiny_model $(DEMO_MODEL)

# The waiter prints one line once the app is ready (GET /ready): from then on a first
# request cold-starts in the documented time. `sllm-ray serve` is `serve run` draining on
# SIGTERM/Ctrl-C (README, *Stopping*).
run: setup demo-model
	$(PY) -m sllm_ray.tools.wait_ready & exec $(VENV)/bin/sllm-ray serve configs/serve.yaml

test: setup sllm-cli
	$(VENV)/bin/pytest -v -rs tests/unit tests/serve tests/e2e
	$(VENV)/bin/pytest -v -rs tests/cluster  # its own session: a process joins one Ray cluster
	$(VENV)/bin/pytest -v -rs tests/netns  # two hosts in network namespaces (skipped without root)

test-fast: setup
	SLLM_TEST_FUZZ_EXAMPLES=50 $(VENV)/bin/pytest -q -rs tests/unit tests/serve  # no vLLM engine: the fake one

unit: setup
	$(VENV)/bin/pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check sllm_ray tests benchmarks
	$(VENV)/bin/ruff format --check sllm_ray tests benchmarks

# By hand, not in CI: schemathesis (`st run --checks all`, in an environment of its own: it
# pins other versions of the HTTP stack) against the fake-engine app; ARGS adds `st run`
# arguments, e.g. ARGS='--max-examples 200'.
contract: setup $(SCHEMATHESIS_VENV)/bin/st
	ST=$(SCHEMATHESIS_VENV)/bin/st PY=$(PY) bash tests/contract/run.sh

$(SCHEMATHESIS_VENV)/bin/st:
	test -x $(SCHEMATHESIS_VENV)/bin/python || $(PYTHON) -m venv $(SCHEMATHESIS_VENV)
	$(SCHEMATHESIS_VENV)/bin/pip install -q schemathesis==4.32.5

bench: setup demo-model
	$(PY) benchmarks/serve_bench.py

clean:
	rm -rf $(VENV) $(SLLM_CLI_VENV) $(SCHEMATHESIS_VENV) $(DEMO_MODEL) .pytest_cache
