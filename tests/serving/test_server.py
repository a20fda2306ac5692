"""stmem serve's request guard on a real ASGI app, in process: what it refuses, and that what it passes reaches
the app whole. (The guard in front of the registered model, over HTTP: tests/flows/test_pipeline.py.)"""
import json
import time

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.limits import MAX_BODY_BYTES, MAX_REQUEST_CHARS
from serving.server import RequestGuard, bind


async def echo(request):
    body = await request.body()
    return JSONResponse({"bytes": len(body), "rows": len(json.loads(body)["inputs"]["context"])})


@pytest.fixture(scope="module")
def client():
    return TestClient(RequestGuard(Starlette(routes=[Route("/invocations", echo, methods=["POST"])])))


def rows(n: int, chars: int) -> dict:
    return {"inputs": {"context": ["x" * chars] * n, "question": ["Where?"] * n}}


def test_a_request_within_the_limits_reaches_the_app_whole(client):
    payload = json.dumps(rows(2, 1000)).encode()
    r = client.post("/invocations", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json() == {"bytes": len(payload), "rows": 2}


def test_256_rows_of_100000_characters_are_refused_on_the_body_size_in_well_under_a_second(client):
    payload = json.dumps(rows(256, 100_000)).encode()
    started = time.perf_counter()
    r = client.post("/invocations", content=payload, headers={"content-type": "application/json"})
    print(f"refused in {time.perf_counter() - started:.3f} s")  # the figure docs/operations.md quotes
    assert r.status_code == 413
    assert r.json()["message"] == f"request body of {len(payload):,} bytes, over the limit of {MAX_BODY_BYTES:,}; " \
                                  "send fewer or shorter rows"


def test_a_body_without_a_length_is_refused_once_past_the_limit(client):
    def chunks():  # chunked transfer: no Content-Length to go by
        for _ in range(5):
            yield b" " * (1024 * 1024)
    r = client.post("/invocations", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["message"] == \
        f"request body over the limit of {MAX_BODY_BYTES:,} bytes; send fewer or shorter rows"


def test_json_too_deep_to_parse_is_a_400_not_a_500(client):
    r = client.post("/invocations", content=b"[" * 100_000 + b"]" * 100_000,
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["message"].startswith("request JSON is nested too deeply to parse")
    assert "\n" not in r.json()["message"]


def test_too_many_characters_within_the_body_size_are_refused(client):
    payload = rows(3, 70_000)  # 210,018 characters in 420 KB
    r = client.post("/invocations", json=payload)
    assert r.status_code == 413 and r.json()["message"] == (
        f"{3 * 70_000 + 3 * 6 + len('inputs') + len('context') + len('question'):,} characters in one request, "
        f"over the limit of {MAX_REQUEST_CHARS:,}; send fewer or shorter rows per request")


def test_a_port_another_server_listens_on_is_refused():
    first = bind("127.0.0.1", 0)
    port = first.getsockname()[1]
    try:
        with pytest.raises(ValueError, match=f"--port {port}: cannot serve on 127.0.0.1:{port}: another process is "
                                             "listening on it; choose another --port"):
            bind("127.0.0.1", port)
    finally:
        first.close()
    bind("127.0.0.1", port).close()  # free again once the other server is gone
