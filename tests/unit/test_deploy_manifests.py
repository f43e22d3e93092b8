"""The deployment files under deploy/ pass their tools' own validation: every Kubernetes
object (and the pod templates inside the RayService) against Kubernetes' schemas with
kubernetes-validate, the compose stack with `docker-compose config -q`. KubeRay's own CRD
schema is not checked (not available offline)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
K8S_VERSION = "1.30.0"


def _k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                out.append((f"{path.relative_to(REPO)}:{doc['kind']}", doc))
    return out


def _ray_service() -> dict[str, Any]:
    (service,) = [doc for _, doc in _k8s_objects() if doc["kind"] == "RayService"]
    return service


def _pods(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The RayService's pod templates as the Pods KubeRay makes of them."""
    cluster = service["spec"]["rayClusterConfig"]
    templates = {"head": cluster["headGroupSpec"]["template"]}
    templates.update({g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]})
    return {
        name: {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"sllm-ray-{name}"}, **template}
        for name, template in templates.items()
    }


def test_the_kubernetes_objects_pass_kubernetes_schemas() -> None:
    objects = [(name, doc) for name, doc in _k8s_objects() if doc["kind"] != "RayService"]
    assert {doc["kind"] for _, doc in objects} >= {"Secret", "PersistentVolumeClaim"}
    for _, doc in objects:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_rayservice_pod_templates_pass_the_pod_schema() -> None:
    pods = _pods(_ray_service())
    assert set(pods) == {"head", "gpu-workers"}
    for pod in pods.values():
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    broken = copy.deepcopy(pods["head"])
    broken["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_every_pod_has_shm_probes_limits_keys_and_a_non_root_user() -> None:
    objects = dict(_k8s_objects())
    secret = next(doc for doc in objects.values() if doc["kind"] == "Secret")
    assert "api_keys.yaml" in secret["stringData"]
    head_env = {}
    for name, pod in _pods(_ray_service()).items():
        spec = pod["spec"]
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory", name
        assert volumes["api-keys"]["secret"]["secretName"] == secret["metadata"]["name"], name
        (container,) = spec["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["dshm"] == "/dev/shm" and mounts["api-keys"] == "/etc/sllm-ray/keys", name
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8000}, name
        resources = container["resources"]
        assert resources["requests"] and resources["limits"] == resources["requests"], name
        if name == "head":
            head_env = {e["name"]: e["value"] for e in container["env"]}
            assert "--drain-only" in container["lifecycle"]["preStop"]["exec"]["command"]
            assert spec["terminationGracePeriodSeconds"] > 30  # drain_timeout_s's default
    # The app is built on the head: its keys file is the Secret's, mounted on every pod.
    assert head_env["SLLM_RAY_API_KEYS_FILE"] == "/etc/sllm-ray/keys/api_keys.yaml"


def _compose_tool() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    pytest.skip("no compose tool: `make tools` installs Debian's docker-compose (CI does)")


def _compose_config(tool: list[str], path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env_file = COMPOSE.parent / ".env.example"
    return subprocess.run(
        [*tool, "--env-file", str(env_file), "-f", str(path), "config", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=COMPOSE.parent,
    )


def test_the_compose_stack_passes_the_compose_tools_validation(tmp_path: Path) -> None:
    tool = _compose_tool()
    done = _compose_config(tool, COMPOSE, "-q")
    assert done.returncode == 0, done.stderr
    # The validator bites: a misspelt depends_on condition is refused.
    broken = COMPOSE.read_text().replace("condition: service_healthy", "condition: service_ready")
    (tmp_path / "docker-compose.yml").write_text(broken)
    done = _compose_config(tool, tmp_path / "docker-compose.yml", "-q")
    assert done.returncode != 0 and "service_ready" in done.stderr


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a resolved service's volumes (short or long syntax: compose
    1.29 writes the short one)."""
    out = {}
    for volume in service["volumes"]:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        out[target] = source
    return out


def test_the_compose_stack_as_the_tool_resolves_it() -> None:
    done = _compose_config(_compose_tool(), COMPOSE)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {"head", "worker-1", "worker-2", "prometheus", "grafana"}
    for name in ("head", "worker-1", "worker-2"):
        service = services[name]
        assert service["shm_size"] == "3gb" and service["init"] is True
        assert service["healthcheck"]["test"] == ["CMD", "sllm-ray-entrypoint", "health"]
        assert _mounts(service)["/var/lib/sllm-ray"] == f"{name}-data", name
    assert services["head"]["environment"]["MODE"] == "head"
    for worker in ("worker-1", "worker-2"):
        assert services[worker]["environment"]["RAY_HEAD"] == "head:6379"
        assert services[worker]["depends_on"]["head"]["condition"] == "service_started"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    # Prometheus scrapes every Ray node's export; Grafana gets the project's dashboard.
    scrape = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["head:8080", "worker-1:8080", "worker-2:8080"]
    dashboard = _mounts(services["grafana"])["/var/lib/grafana/dashboards/sllm-ray.json"]
    assert dashboard == str(DEPLOY / "grafana" / "sllm-ray.json")


def test_the_prometheus_configs_pass_promtool() -> None:
    if not shutil.which("promtool"):
        pytest.skip("no promtool: `make tools` installs Debian's prometheus (CI does)")
    for path in (COMPOSE.parent / "prometheus.yml", DEPLOY / "prometheus" / "prometheus.yml"):
        done = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
