"""The ingress's HTTP contract against the live app (fake engine): ``/openapi.json`` declares
every route's body, answers and methods, other methods get 405 with ``Allow``; bodies are
bounded in size and time; a stalled request ends by its deadline; registration checks
engine arguments by the engine's own parsing and hub ids."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from fake_app import PREFIX, fake_model
from support import wait_for

CHAT = "/v1/chat/completions"
ADMIN = "/v1/admin/models"
HI = [{"role": "user", "content": "hi"}]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
TAKE_BODIES = {"post", "put", "patch"}
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}


def _refs(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _assert_error(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, (reply.status_code, reply.text)
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status, error
    return error


def test_openapi_declares_every_route_and_other_methods_are_405_with_allow(fake_admin: httpx.Client) -> None:
    schema = fake_admin.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for ref in _refs(schema):  # every schema a route names is in the document
        assert ref.removeprefix("#/components/schemas/") in components, ref
    operations = 0
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            operations += 1
            responses = op["responses"]
            (ok,) = {"200", "201"} & set(responses)
            assert "application/json" in responses[ok]["content"], (method, path)
            assert {"400", "401", "405", "500", "504"} <= set(responses), (method, path, sorted(responses))
            for status, reply in responses.items():
                if status >= "400":
                    assert reply["content"]["application/json"]["schema"] == ERROR_SCHEMA, (path, status)
            if method in TAKE_BODIES:
                body = op["requestBody"]["content"]["application/json"]["schema"]
                assert body["$ref"].removeprefix("#/components/schemas/") in components
            else:
                assert "requestBody" not in op, (method, path)
    # Every other method on a real path of each route (its parameters filled in): a 405
    # naming exactly that route's methods, though a model's sub-resource path
    # (/v1/admin/models/m/adapters) matches the model's own {name:path} route too (no model
    # has such a name).
    for path, ops in schema["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "m", path)
        declared = {method.upper() for method in ops}
        for method in set(METHODS) - declared:
            reply = fake_admin.request(method, concrete)
            _assert_error(reply, 405)
            assert set(reply.headers["allow"].split(", ")) == declared, (method, path, reply.headers)
    assert operations >= 16
    chat = schema["paths"][CHAT]["post"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert "messages" in components["ChatCompletionBody"]["required"]


def _raw_request(head: str, pieces: Iterator[bytes], timeout_s: float = 30) -> tuple[int, bytes]:
    """Send a request's head and body pieces on a socket of its own, never ending the body
    unless the pieces do; the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", 8000), timeout=timeout_s) as sock:
        sock.sendall(head.encode())
        for piece in pieces:
            sock.sendall(piece)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < 20:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def _head(path: str, **headers: str) -> str:
    lines = [f"POST {PREFIX}{path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def test_a_chunked_body_past_the_limit_is_answered_413_before_it_ends(fake_admin: httpx.Client) -> None:
    chunk = b" " * 65536
    # 1.5 MiB of an endless chunked body (the limit is 1 MiB): the answer comes though the
    # body never ends, so the ingress cut it at the limit rather than read it whole.
    pieces = (b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(24))
    status, body = _raw_request(_head(CHAT, Transfer_Encoding="chunked"), pieces)
    assert status == 413, body
    assert b"limit of 1048576 bytes" in body
    # A small chunked body is read as usual.
    whole = json.dumps({"model": "warm", "messages": HI, "max_tokens": 2}).encode()
    ended = iter([b"%x\r\n%s\r\n0\r\n\r\n" % (len(whole), whole)])
    status, body = _raw_request(_head(CHAT, Transfer_Encoding="chunked"), ended)
    assert status == 200, body


def test_a_body_that_does_not_arrive_is_408_after_request_body_timeout_s() -> None:
    started = time.monotonic()
    # Content-Length promises more than is sent: the body never completes.
    status, body = _raw_request(_head(CHAT, Content_Length="1000"), iter([b'{"model": "warm"']))
    assert status == 408, body
    assert b"request_body_timeout_s" in body
    assert time.monotonic() - started < 15


def test_a_stalled_request_is_failed_by_its_deadline(fake_admin: httpx.Client, tiny_model_dir: Path) -> None:
    # Each token takes 3 s; the model's deadline is 1.5 s.
    model = fake_model("stalled", tiny_model_dir, autoscaling={"min_replicas": 1}, request_deadline_s=1.5)
    model["engine_kwargs"] = {"fake_token_s": 3}
    assert fake_admin.post(ADMIN, json=model).status_code == 201
    try:
        wait_for(
            lambda: fake_admin.get(f"{ADMIN}/stalled").json()["replicas"].get("RUNNING"), 90, "a replica"
        )
        started = time.monotonic()
        whole = fake_admin.post(CHAT, json={"model": "stalled", "messages": HI, "max_tokens": 2})
        error = _assert_error(whole, 504)
        assert "deadline of 1.5 s (model stalled's request_deadline_s)" in error["message"]
        assert time.monotonic() - started < 2.9  # not the 6 s the answer would take
        # A stream whose next token does not come in time ends with the error and [DONE].
        body = {"model": "stalled", "messages": HI, "max_tokens": 2, "stream": True}
        with fake_admin.stream("POST", CHAT, json=body) as stream:
            assert stream.status_code == 200
            events = [line for line in stream.iter_lines() if line]
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == 504, events
    finally:
        assert fake_admin.delete(f"{ADMIN}/stalled").status_code == 200


def test_registration_checks_engine_arguments_by_the_engines_parser_and_hub_ids(
    fake_admin: httpx.Client, tiny_model_dir: Path
) -> None:
    model = fake_model("checked", tiny_model_dir)
    model["engine_kwargs"] = {"fake_token_s": "slow"}
    error = _assert_error(fake_admin.post(ADMIN, json=model), 422)
    assert "fake-token-s: invalid float value: 'slow'" in error["message"]
    # The hub does not answer here (tests/conftest.py), and the model is in no local cache.
    typo = fake_model("checked", tiny_model_dir, model_source="no-such-org/no-such-model")
    error = _assert_error(fake_admin.post(ADMIN, json=typo), 404)
    assert error["param"] == "model_source"
    assert "no-such-org/no-such-model" in error["message"] and "Hugging Face" in error["message"]
    assert fake_admin.get(f"{ADMIN}/checked").status_code == 404
