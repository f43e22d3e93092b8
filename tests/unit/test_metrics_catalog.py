"""The Grafana dashboard loads, and every query in it names a metric sllm_ray exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from sllm_ray.metrics import METRICS

REPO = Path(__file__).resolve().parents[2]
# Ray's exporter prefixes "ray_"; histograms come as _bucket, _count and _sum series.
EXPORTED = re.compile(r"\bray_(sllm_\w+?)(?:_bucket|_count|_sum)?\b")


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "sllm-ray.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = set()
    for query in queries:
        names = EXPORTED.findall(query)
        assert names, query
        for name in names:
            assert name in METRICS, f"{name} in {query!r} is not exported"
            used.add(name)
    assert used == set(METRICS), f"metrics without a panel: {set(METRICS) - used}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_metric_names_are_prefixed_and_well_formed() -> None:
    for name, (kind, description, tags, buckets) in METRICS.items():
        assert name.startswith("sllm_") and description and tags
        assert kind in {"counter", "gauge", "histogram"}
        assert (buckets is not None) == (kind == "histogram")
        assert name.endswith("_total") == (kind == "counter")


def _export_ports() -> set[int]:
    """The metrics export ports the cluster configs start Ray with, on every node."""
    ports = set()
    for name in ("ray-cluster.yaml", "ray-cluster.local.yaml"):
        config = yaml.safe_load((REPO / "cluster" / name).read_text())
        commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
        starts = [c for c in commands if "ray start" in c]
        assert starts and all("--metrics-export-port=" in c for c in starts), name
        ports |= {int(p) for c in starts for p in re.findall(r"--metrics-export-port=(\d+)", c)}
    docs = yaml.safe_load_all((REPO / "deploy" / "kuberay" / "rayservice.yaml").read_text())
    (service,) = [doc for doc in docs if doc["kind"] == "RayService"]
    cluster = service["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    ports |= {int(group["rayStartParams"]["metrics-export-port"]) for group in groups}
    # The container entry point's default, which the compose stack's Prometheus scrapes.
    entrypoint = (REPO / "deploy" / "docker" / "entrypoint.sh").read_text()
    (default,) = re.findall(r'RAY_METRICS_PORT="\$\{RAY_METRICS_PORT:-(\d+)\}"', entrypoint)
    ports.add(int(default))
    compose = yaml.safe_load((REPO / "deploy" / "compose" / "prometheus.yml").read_text())
    ports |= {int(t.rsplit(":", 1)[1]) for t in compose["scrape_configs"][0]["static_configs"][0]["targets"]}
    return ports


def test_the_prometheus_example_scrapes_rays_export() -> None:
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    # The static target is the port every cluster config starts Ray's export on ...
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    ports = _export_ports()
    assert len(ports) == 1 and targets and {int(t.rsplit(":", 1)[1]) for t in targets} == ports
    # ... and the discovered targets come from the file Ray's head writes in its temp dir.
    (files,) = [sd["files"] for sd in job["file_sd_configs"]]
    assert files == [f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]
