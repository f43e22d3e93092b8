"""The cluster configurations pass Ray's and Serve's own validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["ray-cluster.yaml", "ray-cluster.local.yaml"])
def test_ray_up_configs_pass_rays_validation(name: str) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster" / name).read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs first
    broken = {**config, "head_node_typo": "head"}
    with pytest.raises(Exception, match="head_node_typo"):
        validate_config(prepare_config(broken))


def test_the_rayservice_serves_configs_serve_yaml() -> None:
    from ray.serve.schema import ServeDeploySchema

    docs = yaml.safe_load_all((REPO / "deploy" / "kuberay" / "rayservice.yaml").read_text())
    (service,) = [doc for doc in docs if doc["kind"] == "RayService"]
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    # The same as configs/serve.yaml but for the address the proxy listens on.
    expected = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    expected["http_options"]["host"] = "0.0.0.0"
    assert serve_config == expected


@pytest.mark.parametrize("name", ["cluster/ray-cluster.yaml", "cluster/ray-cluster.local.yaml", "Dockerfile"])
def test_ray_nodes_start_with_the_serve_controller_settings(name: str) -> None:
    """Where a config starts the Ray head itself (the image's entry point, ``ray up``), it
    sets what ``ray_compat.SERVE_NODE_ENV`` says, as ``sllm-ray serve`` does."""
    from sllm_ray.ray_compat import SERVE_NODE_ENV

    text = (REPO / name).read_text()
    for variable, value in SERVE_NODE_ENV.items():
        assert f"{variable}={value}" in text
