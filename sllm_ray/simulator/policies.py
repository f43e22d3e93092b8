"""The systems the simulator compares, as the choices that set them apart.

Every policy runs through the same event core (``core.py``) and the project's own
placement estimate (``control/placement.py``), sleeper eviction (``engine/sleepers.py``),
DRAM tier budget (``store/dram_tier.LruBudget``) and keep-alive windows
(``control/keep_alive.py``); a policy only switches those parts on or off.
"""

from __future__ import annotations

from dataclasses import dataclass

# llm-d's fast model actuation keeps this many sleeping engines per GPU.
FMA_SLEEPERS_PER_GPU = 1


@dataclass(frozen=True)
class Policy:
    name: str
    # Checkpoints on every node's disk, cached in its DRAM tier, and nodes ranked by what
    # they hold (storage-aware placement); else the weights come from the source.
    checkpoint_store: bool
    # Engines prepared ahead of demand (sllm_ray's forked hosts); else each start pays a
    # fresh process that imports and builds the engine (``plain_start_s``).
    prepared_hosts: bool
    # Sleeping engines kept per node, or per GPU (times the node's GPUs); 0: none.
    sleepers_per_node: int = 0
    sleepers_per_gpu: int = 0
    adaptive_keep_alive: bool = False
    # Serve's look-back period comes before the keep-alive (``Calibration.scale_down_lag_s``).
    serve_autoscaler: bool = True

    def sleep_limit(self, gpus_per_node: int) -> int:
        return self.sleepers_per_node + self.sleepers_per_gpu * gpus_per_node


def policies(sleepers_per_node: int) -> dict[str, Policy]:
    """The five, sllm_ray's with the app's ``engine_sleepers_per_node``."""
    sllm = Policy("sllm_ray", True, True, sleepers_per_node=sleepers_per_node)
    return {
        "sllm_ray": sllm,
        "sllm_ray_adaptive": Policy(
            "sllm_ray_adaptive", True, True, sleepers_per_node=sleepers_per_node, adaptive_keep_alive=True
        ),
        # Its own autoscaler, which scales down after the keep-alive alone.
        "serverlessllm": Policy("serverlessllm", True, False, serve_autoscaler=False),
        "ray_serve_llm": Policy("ray_serve_llm", False, False),
        # Kubernetes scales the pods: no Serve look-back.
        "fma": Policy("fma", False, False, sleepers_per_gpu=FMA_SLEEPERS_PER_GPU, serve_autoscaler=False),
    }
