"""``stmem serve``: MLflow's scoring server for a registered model, behind limits a request cannot pass.

The app is MLflow's own (``mlflow.pyfunc.scoring_server``, what ``mlflow models
serve`` runs): the same request formats, the same answers and 400s. In front
of it a guard refuses, before MLflow reads or parses anything:

- a body over ``MAX_BODY_BYTES``: 413, from its Content-Length before a byte
  of it is read, or as soon as a body without one passes the limit;
- JSON nested deeper than Python parses (MLflow answers such a body 500): 400;
- more than ``MAX_REQUEST_CHARS`` characters in its strings: 413.

Each answer is one line of JSON in MLflow's error shape. The model checks rows
and characters again wherever it runs (``serving.pyfunc_model``), its answer
framed by MLflow's. A request's time is ``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``:
MLflow answers 504, and the model stops at that deadline. The port is bound
here, before anything is printed or loaded: one another process holds is
refused in one line.
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import socket

from serving.limits import MAX_BODY_BYTES, MAX_REQUEST_CHARS

MODEL_ENV = "STMEM_SERVE_MODEL"  # the model's local directory, for each worker


def bind(host: str, port: int) -> socket.socket:
    """The server's socket, bound and listening; a port that cannot be had is a ``ValueError`` naming it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # as uvicorn binds: a port left in TIME_WAIT by a server before is free, one a server listens on is not
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # requests that come while the model loads wait for it
    except OSError as exc:
        sock.close()
        why = "another process is listening on it" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ValueError(f"--port {port}: cannot serve on {host}:{port}: {why}; choose another --port") from None
    sock.set_inheritable(True)
    return sock


def serve(model_dir: str, sock: socket.socket, workers: int, timeout: int) -> None:
    """Serve the pyfunc model in ``model_dir`` on ``sock`` until stopped (SIGINT or SIGTERM)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ[MODEL_ENV] = model_dir
    os.environ["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(timeout)  # read by MLflow's app and by the model
    config = uvicorn.Config(f"{__name__}:create_app", factory=True, workers=workers)
    if workers > 1:  # as uvicorn.run does, on our socket
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])


def create_app():
    """MLflow's scoring app for the model in ``$STMEM_SERVE_MODEL``, behind ``RequestGuard`` (one per worker)."""
    from mlflow.pyfunc import scoring_server

    return RequestGuard(scoring_server.init(scoring_server.load_model_with_mlflow_config(os.environ[MODEL_ENV])))


class RequestGuard:
    """ASGI middleware: refuses an oversized body or JSON too deep to parse before the app sees it."""

    def __init__(self, app, max_body_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _refuse(send, 413, f"request body of {int(declared):,} bytes, over the limit of "
                                            f"{self.max_body_bytes:,}; send fewer or shorter rows")
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:  # a body sent without a Content-Length
                return await _refuse(send, 413, f"request body over the limit of {self.max_body_bytes:,} "
                                                "bytes; send fewer or shorter rows")
        if b"json" in headers.get(b"content-type", b""):
            try:
                chars = await asyncio.to_thread(_string_chars, body)
            except RecursionError:
                return await _refuse(send, 400, "request JSON is nested too deeply to parse; a request is "
                                                "{\"dataframe_split\": {\"columns\": [...], \"data\": [[...]]}} "
                                                "or another of MLflow's flat formats")
            except ValueError:
                chars = 0  # not JSON: MLflow's 400 says so
            if chars > MAX_REQUEST_CHARS:
                return await _refuse(send, 413, f"{chars:,} characters in one request, over the limit of "
                                                f"{MAX_REQUEST_CHARS:,}; send fewer or shorter rows per request")
        replayed = False

        async def replay():  # the body, read once here, for the app
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _string_chars(body: bytes) -> int:
    """The characters in the strings of a JSON body (its contexts and questions, and a few names)."""
    total, todo = 0, [json.loads(body)]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            todo += item.keys()
            todo += item.values()
        elif isinstance(item, list):
            todo += item
    return total


async def _refuse(send, status: int, message: str) -> None:
    """An answer in MLflow's error shape, one line; the connection closes (an unread body is dropped)."""
    code = "REQUEST_LIMIT_EXCEEDED" if status == 413 else "BAD_REQUEST"
    content = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": content})
