"""Property-based fuzzing of every route of the live app (fake engine): random methods,
JSON bodies (OpenAI's field names among random ones), raw bytes and headers. Whatever is
sent, the answer is no 5xx but an honest 503 with Retry-After, every error is in OpenAI's
shape, and a normal chat answers afterwards."""

from __future__ import annotations

import json
import os
import string
from typing import Any

import httpx
import openai
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

HI = [{"role": "user", "content": "hi"}]
# Requests per run: `make test` sends 200; `make test-fast`, the quick loop, fewer.
FUZZ_EXAMPLES = int(os.environ.get("SLLM_TEST_FUZZ_EXAMPLES", "200"))
# Every route; admin routes that change things name models that do not exist, so the
# fuzzing changes nothing the other tests use (a random body never makes a valid config).
ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/models/warm",
    "/health",
    "/ready",
    "/status",
    "/v1/admin/models",
    "/v1/admin/models/fuzz-nope",
    "/register",
    "/update",
    "/delete",
    "/openapi.json",
)
SLLM_ADMIN = ("/register", "/update", "/delete")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "HEAD")
FIELDS = (
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "best_of",
    "stream",
    "logprobs",
    "top_logprobs",
    "stop",
    "temperature",
    "tools",
    "tool_choice",
    "role",
    "content",
    "model_source",
    "engine_kwargs",
    "autoscaling",
    "backend_config",
    "auto_scaling_config",
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.integers(min_value=-3, max_value=40)  # within the limits: these reach the engine
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["warm", "fuzz-nope", "user", "assistant", "hi", ""])
)
_keys = st.sampled_from(FIELDS) | st.text(max_size=10)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=20,
)
# Bodies: mostly JSON objects that look like requests (a known model, messages), some
# arbitrary JSON, some raw bytes.
_requestish = st.fixed_dictionaries(
    {"model": st.sampled_from(["warm", "fuzz-nope"])},
    optional={"messages": st.just(HI) | _json, "max_tokens": st.integers(-2, 8), "stream": st.booleans()},
).flatmap(lambda base: st.dictionaries(_keys, _json, max_size=4).map(lambda extra: {**extra, **base}))
_bodies = (
    _requestish.map(lambda body: json.dumps(body).encode())
    | _json.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=64)
)
# HTTP takes no header value with spaces around it: the client would refuse to send it.
_header_text = st.text(alphabet=string.ascii_letters + string.digits + " -_/;=.,*", max_size=30).map(
    str.strip
)
_headers = st.dictionaries(
    st.sampled_from(["content-type", "accept", "authorization", "x-request-id", "x-fuzz", "user-agent"]),
    _header_text,
    max_size=3,
)


def _check(reply: httpx.Response, sent: tuple[str, str, bytes, dict[str, str]]) -> None:
    status = reply.status_code
    honest_503 = status == 503 and reply.headers.get("retry-after", "").isdigit()
    assert status < 500 or honest_503, (sent, status, reply.text[:500])
    if status >= 400 and sent[0] != "HEAD":
        body: Any = reply.json()
        assert set(body) >= {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["code"] == status and body["error"]["message"], body


def test_random_requests_on_every_route_get_no_5xx_and_openai_errors(
    fake_admin: httpx.Client, fake_client: openai.OpenAI
) -> None:
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,  # nothing written into the checkout
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        method=st.sampled_from(METHODS),
        route=st.sampled_from(ROUTES),
        body=_bodies,
        headers=_headers,
    )
    def one(method: str, route: str, body: bytes, headers: dict[str, str]) -> None:
        # ServerlessLLM's admin routes take the model from the body: a well-formed delete
        # or update of the suite's model would be obeyed, and the check below would fail.
        assume(route not in SLLM_ADMIN or b'"warm"' not in body)
        reply = fake_admin.request(method, route, content=body, headers=headers)
        _check(reply, (method, route, body, headers))

    one()
    reply = fake_client.chat.completions.create(model="warm", messages=HI, max_tokens=2)
    assert reply.choices[0].message.content == "tok0 tok1"
