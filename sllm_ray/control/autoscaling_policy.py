"""The autoscaling policy every model deployment names: Serve's default one, plus what
sllm_ray sets up in Serve's controller.

Serve's controller instantiates a class-callable policy once per deployment, in its own
process: the one place where sllm_ray's code runs there. So the constructor is where the
controller is set up (``ray_compat.keep_replica_actor_classes``); every decision is Serve's
default policy's. Serve pickles this module by value, so it stays small and imports only
what the controller has installed anyway.
"""

from __future__ import annotations

from typing import Any

from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy
from ray.serve.config import AutoscalingContext

from sllm_ray import ray_compat


class QueueLengthPolicy:
    """Serve's queue-length policy (``target_ongoing_requests``), in a controller that keeps
    each model's replica actor class across scales from zero."""

    def __init__(self) -> None:
        ray_compat.keep_replica_actor_classes()

    def __call__(self, ctx: AutoscalingContext) -> tuple[int | float, dict[str, Any]]:
        return replica_queue_length_autoscaling_policy(ctx)
