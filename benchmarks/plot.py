"""Plot benchmark results (the JSON line each benchmark prints) as PNG files.

    python benchmarks/cold_start.py --runs 5 | head -1 > cold_start.json
    python benchmarks/load_bench.py | head -1 > load_bench.json
    python benchmarks/burst.py --out burst.json
    python benchmarks/plot.py cold_start.json load_bench.json burst.json --out plots/

Each input is recognised by its keys: ``cold_start.py`` gives ``cold_start_ttft.png``
(time to first token, cold/hot/warm against the baseline, log scale) and
``cold_start_phases.png`` (when each phase was reached, p50); ``load_bench.py`` gives
``load_bench.png`` (weights-loading bandwidth against the machine's copy bandwidth);
``burst.py`` gives ``burst.png`` (p50 and max time to first token per N, both sides,
against the target lines).
Needs matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_cold_start(result: dict[str, Any], out: Path) -> list[Path]:
    plt = _pyplot()
    sllm, hot, base = result["sllm_ray"], result.get("sllm_ray_hot"), result["baseline"]
    bars = [
        ("sllm_ray cold", sllm["ttft_p50_s"]),
        *([("sllm_ray hot", hot["ttft_p50_s"])] if hot else []),
        ("baseline cold", base["ttft_p50_s"]),
        ("sllm_ray warm", sllm["warm_ttft_p50_s"]),
        ("baseline warm", base["warm_ttft_p50_s"]),
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    labels, values = zip(*bars, strict=True)
    ax.bar(labels, values, color=["#2b8cbe" if "sllm" in label else "#bdbdbd" for label in labels])
    ax.set_yscale("log")
    ax.set_ylabel("time to first token, p50 (s, log scale)")
    ax.set_title(f"Cold start: {result['speedup_p50']}x faster than the baseline")
    for i, value in enumerate(values):
        ax.annotate(f"{value:.3g} s", (i, value), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    ttft = out / "cold_start_ttft.png"
    fig.savefig(ttft, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4))
    sides = [("sllm_ray cold", sllm), *([("sllm_ray hot", hot)] if hot else []), ("baseline", base)]
    # Marks before the request (a worker started ahead of demand) are no part of the wait.
    reached = [{k: v for k, v in side["phases_p50_s"].items() if v >= 0} for _, side in sides]
    names = list(dict.fromkeys(name for phases in reached for name in phases))
    colors = dict(zip(names, plt.get_cmap("tab20").colors, strict=False))
    for row, ((_, side), phases) in enumerate(zip(sides, reached, strict=True)):
        start = 0.0
        for name, at in sorted(phases.items(), key=lambda item: item[1]):
            # Each bar runs from the phase before to this one being reached.
            ax.barh(row, at - start, left=start, color=colors[name], edgecolor="white")
            start = at
        ax.text(start, row, f" first token {side['ttft_p50_s']:.2f} s", va="center", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[name]) for name in names]
    ax.legend(handles, [f"until {name.replace('_', ' ')}" for name in names], fontsize=7, loc="lower right")
    ax.set_yticks(range(len(sides)), [label for label, _ in sides])
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("seconds after the request (p50; linear below 1 s, log above)")
    ax.set_title("Where a start from zero replicas spends its time")
    fig.tight_layout()
    phases_png = out / "cold_start_phases.png"
    fig.savefig(phases_png, dpi=120)
    plt.close(fig)
    return [ttft, phases_png]


def plot_load_bench(result: dict[str, Any], out: Path) -> list[Path]:
    plt = _pyplot()
    runs = {k: v for k, v in result.items() if isinstance(v, dict) and "gbps" in v}
    copy = result["copy_bandwidth_gbps"]
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [name.replace("_", " ") for name in runs]
    ax.bar(labels, [run["gbps"] for run in runs.values()], color="#2b8cbe")
    for name, color in (("warm_gbps", "#d95f0e"), ("fresh_gbps", "#636363")):
        ax.axhline(
            copy[name], color=color, linestyle="--", label=f"copy, {name[:-5]} memory: {copy[name]} GB/s"
        )
    ax.set_yscale("log")
    ax.set_ylabel("weights loaded, GB/s (log scale)")
    ax.set_title(f"Loading {result['checkpoint_bytes'] / 1e9:.2f} GB of weights into an engine")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    path = out / "load_bench.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def plot_burst(result: dict[str, Any], out: Path) -> list[Path]:
    plt = _pyplot()
    sizes = [str(n) for n in result["sizes"]]
    sides = [("sllm_ray", "#2b8cbe"), *([("baseline", "#bdbdbd")] if result.get("baseline") else [])]
    bars = [(side, stat, color) for side, color in sides for stat in ("p50_s", "max_s")]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(bars)
    for i, (side, stat, color) in enumerate(bars):
        values = [(result[side].get(n) or {}).get(stat) or 0 for n in sizes]
        xs = [x + (i - (len(bars) - 1) / 2) * width for x in range(len(sizes))]
        ax.bar(
            xs,
            values,
            width,
            color=color,
            alpha=1.0 if stat == "p50_s" else 0.55,
            label=f"{side} {stat[:-2]}",
        )
    one = result["target"]["n1_p50_s"]
    if one:
        for factor, style in ((2, "--"), (3, ":")):
            ax.axhline(factor * one, color="#d95f0e", linestyle=style, label=f"{factor}x sllm_ray N=1 p50")
    ax.set_xticks(range(len(sizes)), [f"N = {n}" for n in sizes])
    ax.set_yscale("log")
    seconds = plt.FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(seconds)
    ax.yaxis.set_minor_formatter(seconds)
    ax.set_ylabel("time to first token (s, log scale)")
    failures = result["target"]["failures"]
    ax.set_title(f"N models cold at once, one request each ({failures} sllm_ray requests failed)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "burst.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def plot(result: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    if "speedup_p50" in result:
        return plot_cold_start(result, out)
    if "copy_bandwidth_gbps" in result:
        return plot_load_bench(result, out)
    if result.get("benchmark") == "burst":
        return plot_burst(result, out)
    raise ValueError(f"not a result of cold_start.py, load_bench.py or burst.py: keys {sorted(result)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="files holding a benchmark's JSON line")
    parser.add_argument("--out", type=Path, default=Path("plots"))
    args = parser.parse_args()
    for path in args.results:
        result = json.loads(path.read_text().splitlines()[0])
        for png in plot(result, args.out):
            print(png)
