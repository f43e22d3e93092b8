"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=tests/contract/hooks.py``): the rules that JSON
Schema cannot state, so that a body schemathesis generates as valid is one the API must accept.

- A model's adapters have names of their own, none the model's (``uniqueItems`` compares
  whole items, and no keyword compares one field with another).
- Its autoscaling refuses ``min_replicas`` above ``max_replicas``, and a
  ``look_back_period_s`` that does not exceed ``demand_push_interval_s`` (422, as Serve's own
  ``AutoscalingConfig`` does). ServerlessLLM's ``auto_scaling_config`` names the first two
  ``min_instances`` and ``max_instances``; a null in it means the default.
- Numbers at any depth of ``engine_kwargs`` (ServerlessLLM's ``backend_config``) are bounded
  in magnitude: the document states the bound as ``x-max-number-magnitude``.

Defaults and bounds come from the served OpenAPI document, so nothing here repeats the app's
values.
"""

from __future__ import annotations

from typing import Any

import schemathesis

SLLM_NAMES = {"min_instances": "min_replicas", "max_instances": "max_replicas"}


def _schemas(ctx: Any) -> dict[str, Any]:
    return ctx.operation.schema.raw_schema["components"]["schemas"]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    return [value] if _number(value) else []


def _adapters_ok(body: dict[str, Any]) -> bool:
    adapters = body.get("adapters")
    if not isinstance(adapters, list):
        return True
    names = [str(a.get("adapter")) for a in adapters if isinstance(a, dict)]
    return len(names) == len(set(names)) and str(body.get("model")) not in names


def _autoscaling_ok(ctx: Any, body: dict[str, Any]) -> bool:
    if isinstance(body.get("autoscaling"), dict):
        given = body["autoscaling"]
    elif isinstance(body.get("auto_scaling_config"), dict):
        given = {SLLM_NAMES.get(k, k): v for k, v in body["auto_scaling_config"].items()}
    else:
        return True
    defaults = {
        k: spec.get("default") for k, spec in _schemas(ctx)["AutoscalingConfig"]["properties"].items()
    }
    values = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    lower, upper = values.get("min_replicas"), values.get("max_replicas")
    look_back, push = values.get("look_back_period_s"), values.get("demand_push_interval_s")
    if _number(lower) and _number(upper) and lower > upper:
        return False
    return not (_number(look_back) and _number(push) and look_back <= push)


def _engine_numbers_ok(ctx: Any, body: dict[str, Any]) -> bool:
    bound = _schemas(ctx)["ModelConfig"]["properties"]["engine_kwargs"]["x-max-number-magnitude"]
    free_form = [body.get("engine_kwargs"), body.get("backend_config")]
    return all(abs(n) <= bound for n in _numbers(free_form))


@schemathesis.hook
def filter_case(ctx: Any, case: Any) -> bool:
    # filter_case, not filter_body: schemathesis applies it in the coverage phase as well.
    body = case.body
    if not isinstance(body, dict):
        return True
    return _adapters_ok(body) and _autoscaling_ok(ctx, body) and _engine_numbers_ok(ctx, body)
