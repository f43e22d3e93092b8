"""Everything above the engine, for real, with the fake engine: the OpenAI API through the
ingress, scale from zero, bursts, hot starts, failed builds and a host killed mid-stream."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_app import APP, FAST, fake_model
from support import read_killing, wait_for

from sllm_ray.names import model_app_name


def _stream(client: openai.OpenAI, model: str, max_tokens: int = 4) -> tuple[float, str]:
    """Time to the first token, and the whole text, of one streaming chat."""
    started = time.monotonic()
    first, text = None, ""
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=max_tokens, stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.monotonic() - started
            text += chunk.choices[0].delta.content
    assert first is not None
    return first, text


def _register(admin: httpx.Client, body: dict[str, Any]) -> None:
    reply = admin.post("/v1/admin/models", json=body)
    assert reply.status_code == 201, reply.text


def _replicas(model: str) -> int:
    from ray import serve

    apps = serve.status().applications
    app = apps.get(model_app_name(APP, model))
    if app is None:
        return 0
    return sum(app.deployments[f"model:{model}"].replica_states.values())


def _record(model: str) -> dict[str, Any]:
    from ray import serve

    handle = serve.get_deployment_handle(f"model:{model}", app_name=model_app_name(APP, model))
    return handle.record.remote().result()


def _pool(admin: httpx.Client) -> dict[str, Any]:
    (node,) = admin.get("/status").json()["nodes"]
    return node["engine_hosts"]


def test_the_openai_api_streams_and_answers_whole(fake_client: openai.OpenAI) -> None:
    assert _stream(fake_client, "warm", 3)[1] == "tok0 tok1 tok2"
    reply = fake_client.completions.create(model="warm", prompt="Once", max_tokens=2)
    assert reply.choices[0].text == "tok0 tok1"
    with pytest.raises(openai.BadRequestError, match="prompt is empty"):
        fake_client.completions.create(model="warm", prompt="", max_tokens=2)


def test_pools_are_ready_and_hosts_are_forked_processes(fake_admin: httpx.Client) -> None:
    wait_for(lambda: fake_admin.get("/ready").status_code == 200, 60, "the app to be ready")
    pool = _pool(fake_admin)
    assert pool["ready"] is True and pool["launcher"]["pid"] > 0
    hosts = [h for h in pool["hosts"] if h["state"] == "ready"]
    assert hosts and all(h["pid"] != pool["launcher"]["pid"] for h in hosts)
    # And a Ray worker for the next replica, Serve's replica code imported: counted on the node.
    wait_for(lambda: _pool(fake_admin)["replica_workers"]["idle"] >= 1, 60, "an idle replica worker")


def test_a_cold_replica_runs_in_a_worker_started_ahead_of_demand(
    fake_admin: httpx.Client, fake_client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    _register(fake_admin, fake_model("early", tiny_model_dir, autoscaling=FAST))

    def prepared_workers() -> int:
        workers = _pool(fake_admin)["replica_workers"]
        return workers["idle"] - workers["starting"]

    wait_for(lambda: prepared_workers() >= 1, 60, "a replica worker done with its setup hook")
    sent = time.time()
    _stream(fake_client, "early")
    record = _record("early")
    # Ray's worker start and Serve's replica imports happened before the demand.
    assert record["worker_started_at"] < sent, (record, sent)
    assert record["worker_prepared_at"] < sent, (record, sent)
    # Nothing the start and the first request ran was imported on their way.
    assert record["late_imports"] == [], " ".join(record["late_imports"])
    assert fake_admin.delete("/v1/admin/models/early").status_code == 200


def test_a_replica_worker_has_the_classes_of_the_actors_a_replica_looks_up(fake_admin: httpx.Client) -> None:
    """Each class a process first looks an actor up by is loaded from the GCS (4.5 ms on
    2 cores): a replica's worker does it in its setup hook, before the demand."""
    import ray

    from sllm_ray.engine import replica_workers

    @ray.remote(num_cpus=0, runtime_env=replica_workers.runtime_env(APP))
    class Replica:
        def look_up(self) -> list[str]:
            from ray._private.function_manager import FunctionActorManager

            from sllm_ray import ray_compat
            from sllm_ray.names import named_actor, pool_name, store_name

            def no_load(*_: object) -> None:
                raise AssertionError("a lookup loaded its actor's class")

            FunctionActorManager._load_actor_class_from_gcs = no_load  # type: ignore[method-assign]
            node = ray.get_runtime_context().get_node_id()
            found = [ray_compat.serve_controller()]
            found += [named_actor(name(APP, node)) for name in (pool_name, store_name)]
            return [type(handle).__name__ for handle in found]

    wait_for(lambda: _pool(fake_admin)["replica_workers"]["idle"] >= 1, 60, "an idle replica worker")
    replica = Replica.remote()  # type: ignore[attr-defined]
    try:
        assert ray.get(replica.look_up.remote(), timeout=60) == ["ActorHandle"] * 3
    finally:
        ray.kill(replica)


def test_a_burst_of_cold_models_all_answer(
    fake_admin: httpx.Client, fake_client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    names = [f"burst-{i}" for i in range(4)]
    for name in names:
        _register(fake_admin, fake_model(name, tiny_model_dir, autoscaling=FAST))
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda m: _stream(fake_client, m), names))
    assert [text for _, text in results] == ["tok0 tok1 tok2 tok3"] * len(names)
    assert max(ttft for ttft, _ in results) < 30  # on the 2-core machine, with CI's noise
    assert _pool(fake_admin)["slow_claims"] == 0
    for name in names:
        assert fake_admin.delete(f"/v1/admin/models/{name}").status_code == 200


def test_a_model_back_at_zero_wakes_its_sleeping_engine(
    fake_admin: httpx.Client, fake_client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    _register(fake_admin, fake_model("nap", tiny_model_dir, autoscaling=FAST))
    _stream(fake_client, "nap")
    wait_for(lambda: _replicas("nap") == 0, 60, "nap to scale to zero")
    wait_for(lambda: "nap" in [s["model"] for s in _pool(fake_admin)["sleeping"]], 30, "nap asleep")
    hot_before = _pool(fake_admin)["hot_claims"]
    assert _stream(fake_client, "nap")[1] == "tok0 tok1 tok2 tok3"
    assert _pool(fake_admin)["hot_claims"] == hot_before + 1
    assert fake_admin.delete("/v1/admin/models/nap").status_code == 200


def test_a_broken_engine_fails_its_waiting_request_with_the_cause_and_a_patch_fixes_it(
    fake_admin: httpx.Client, fake_client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    broken = fake_model("broken", tiny_model_dir, autoscaling=FAST)
    broken["engine_kwargs"] = {"fake_fail": "no room for the KV cache"}
    _register(fake_admin, broken)  # and at once a request: it waits for Serve to take the app
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as failed:
        _stream(fake_client, "broken")
    answered_at = time.time()
    assert time.monotonic() - started < 30  # the replica's start, then the failure
    assert failed.value.status_code == 503
    assert "model `broken` failed to start" in str(failed.value) and "no room for the KV cache" in str(
        failed.value
    )
    failure = fake_admin.get("/v1/admin/models/broken").json()["start_failure"]
    assert failure["error"].endswith("no room for the KV cache")
    assert answered_at - failure["failed_at"] < 5  # named to the waiting client within seconds
    fixed = fake_admin.patch("/v1/admin/models/broken", json={"engine_kwargs": {"max_model_len": 512}})
    assert fixed.status_code == 200, fixed.text
    # At once, and several: the failed replica may still be up while the new one starts.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        texts = list(pool.map(lambda _: _stream(fake_client, "broken")[1], range(3)))
    assert texts == ["tok0 tok1 tok2 tok3"] * 3
    assert fake_admin.delete("/v1/admin/models/broken").status_code == 200


def test_a_failed_start_is_over_once_a_retry_has_its_engine(
    fake_admin: httpx.Client, fake_client: openai.OpenAI, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The replica that has its engine tells its node's pool, and the manager, following
    the pool, clears the model's failure: nothing else does for a retry of the same engine."""
    broken_while = tmp_path / "broken"
    broken_while.touch()
    flaky = fake_model("flaky", tiny_model_dir, autoscaling=FAST)
    flaky["engine_kwargs"] = {"fake_fail_while": str(broken_while)}
    _register(fake_admin, flaky)
    with pytest.raises(openai.APIStatusError) as failed:
        _stream(fake_client, "flaky")
    assert failed.value.status_code == 503 and f"{broken_while} exists" in str(failed.value)
    failure = fake_admin.get("/v1/admin/models/flaky").json()["start_failure"]
    assert failure is not None and not failure["retrying"]
    broken_while.unlink()
    time.sleep(max(0.0, failure["retry_at"] - time.time()))
    # The retry, of the same engine; several at once, so that both ingress replicas see it,
    # the one that had the failed deployment's handle among them.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda _: _stream(fake_client, "flaky")[1], range(4)))
    assert texts == ["tok0 tok1 tok2 tok3"] * 4

    def described() -> dict[str, Any]:
        return fake_admin.get("/v1/admin/models/flaky").json()

    wait_for(lambda: described()["start_failure"] is None, 10, "the failure over")
    assert described()["state"] == "active"
    assert fake_admin.delete("/v1/admin/models/flaky").status_code == 200


def _kill_host_mid_stream(stream: Any, model: str) -> tuple[str, Any, float]:
    """Read ``stream``, SIGKILLing the model's engine host after a few tokens."""
    return read_killing(stream, _record(model)["host"]["pid"])


def test_a_stream_whose_host_is_killed_goes_on_from_a_new_host_whole_and_once(
    fake_admin: httpx.Client, fake_client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    slow = fake_model("doomed", tiny_model_dir, autoscaling=FAST)
    slow["engine_kwargs"] = {"fake_token_s": 0.03}
    _register(fake_admin, slow)
    _stream(fake_client, "doomed", 1)
    before = _record("doomed")
    chat = fake_client.chat.completions.create(
        model="doomed",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, last, killed_at = _kill_host_mid_stream(chat, "doomed")
    # The same replica took a new host, no wait for Serve's health check, and the stream
    # went on from the tokens already sent: no gap, no duplicate, usage for the whole.
    assert text == " ".join(f"tok{i}" for i in range(40))
    assert last.usage.completion_tokens == 40 and last.usage.prompt_tokens == 1
    assert last.object == "chat.completion.chunk" and not hasattr(last, "token_ids")
    after = _record("doomed")
    assert after["replica"] == before["replica"]
    assert after["host"]["pid"] != before["host"]["pid"]
    assert after["engine_ready_at"] - killed_at < 10
    # A legacy completion too; one with stop strings cannot be continued from its token
    # ids: its stream ends with an error event, never a bare cut.
    completion = fake_client.completions.create(model="doomed", prompt="hi", max_tokens=30, stream=True)
    text, _, _ = _kill_host_mid_stream(completion, "doomed")
    assert text == " ".join(f"tok{i}" for i in range(30))
    with pytest.raises(openai.APIError, match="engine host"):
        stopping = fake_client.completions.create(
            model="doomed", prompt="hi", max_tokens=30, stop=["x"], stream=True
        )
        _kill_host_mid_stream(stopping, "doomed")
    wait_for(lambda: _try(fake_client, "doomed"), 10, "doomed to answer again", interval_s=0.2)
    assert fake_admin.delete("/v1/admin/models/doomed").status_code == 200


def test_a_stream_whose_replica_is_killed_goes_on_from_a_new_replica(
    fake_admin: httpx.Client, fake_client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    slow = fake_model("orphaned", tiny_model_dir, autoscaling={**FAST, "min_replicas": 1})
    slow["engine_kwargs"] = {"fake_token_s": 0.03}
    _register(fake_admin, slow)
    _stream(fake_client, "orphaned", 1)
    before = _record("orphaned")
    stream = fake_client.chat.completions.create(
        model="orphaned", messages=[{"role": "user", "content": "hi"}], max_tokens=60, stream=True
    )
    text, _, _ = read_killing(stream, before["pid"])
    assert text == " ".join(f"tok{i}" for i in range(60))
    assert _record("orphaned")["replica"] != before["replica"]
    assert fake_admin.delete("/v1/admin/models/orphaned").status_code == 200


def _try(client: openai.OpenAI, model: str) -> bool:
    try:
        return _stream(client, model, 2)[1] == "tok0 tok1"
    except openai.APIError:
        return False
