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


def test_the_prometheus_example_scrapes_rays_export() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8080"]
