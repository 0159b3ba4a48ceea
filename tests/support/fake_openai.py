"""A small OpenAI-compatible HTTP server on 127.0.0.1 for tests: scripted chat replies, hashed embeddings."""

from __future__ import annotations

import array
import base64
import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    #: the parsed JSON body (None when there was none or it was not JSON)
    json: Any
    #: header names lower-cased
    headers: dict[str, str]


@dataclass
class ChatReply:
    """What the server answers to the next chat completion request."""

    #: the streamed deltas; the non-streamed reply's content is their concatenation
    chunks: list[str]
    #: each item: {"id": ..., "name": ..., "arguments": JSON text, sent as is}
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    finish_reason: str | None = None
    model: str | None = None
    usage: dict[str, int] | None = None


@dataclass
class Failure:
    """An error response the server gives instead of an answer."""

    status: int
    message: str
    headers: dict[str, str]


def fake_embedding(text: str, dim: int) -> list[float]:
    """The deterministic vector the server returns for a text: bytes of SHA-256 chains mapped to [-1, 1]."""
    values: list[float] = []
    block = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        values.extend((byte - 127.5) / 127.5 for byte in digest)
        block += 1
    return values[:dim]


def _encode(vector: list[float], packed: bool) -> list[float] | str:
    """A vector as a JSON list, or as base64 of float32 values when the client asked for that."""
    if not packed:
        return vector
    return base64.b64encode(array.array("f", vector).tobytes()).decode("ascii")


class _QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that does not print tracebacks when a client hangs up first."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that timed out closes its socket while a stalled handler still holds it: expected here
        return


class FakeOpenAIServer:
    """Speaks enough of the OpenAI wire format for our client code; records every request."""

    def __init__(self, embedding_dim: int = 8, model: str = "fake-model") -> None:
        self.embedding_dim = embedding_dim
        #: the model named in replies when neither the reply nor the request names one
        self.model = model
        #: every request received, oldest first
        self.requests: list[RecordedRequest] = []
        #: when True, /embeddings lists its data items in reverse order (clients must sort by index)
        self.reverse_embeddings = False
        # invariant: these queues are only touched under _lock (handlers run on their own threads)
        self._chat_replies: deque[ChatReply] = deque()
        self._failures: deque[Failure] = deque()
        self._stalls: deque[float] = deque()
        self._lock = threading.Lock()
        self._httpd: _QuietServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        """Listen on an ephemeral port of 127.0.0.1 and serve on a daemon thread."""
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        # a short poll interval: shutdown() waits up to one interval, once per test
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self._httpd is not None, "the server is not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL clients use, ending in /v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    # --- scripting -------------------------------------------------------------------------------

    def enqueue_chat(
        self,
        text: str | list[str] = "",
        *,
        tool_calls: list[dict[str, str]] | None = None,
        finish_reason: str | None = None,
        model: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        """Queue the answer to the next chat completion; a list of strings is the streamed deltas."""
        chunks = [text] if isinstance(text, str) else list(text)
        with self._lock:
            self._chat_replies.append(ChatReply(chunks, list(tool_calls or []), finish_reason, model, usage))

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `count` requests (any path) with an error status."""
        # retry-after-ms makes the client retry at once instead of backing off for half a second
        sent = {"retry-after-ms": "1", **(headers or {})}
        failure = Failure(status, message or f"fake failure {status}", sent)
        with self._lock:
            self._failures.extend([failure] * count)

    def stall_next(self, seconds: float, count: int = 1) -> None:
        """Wait `seconds` before answering each of the next `count` requests (to provoke client timeouts)."""
        with self._lock:
            self._stalls.extend([seconds] * count)

    def embedding_for(self, text: str, dim: int | None = None) -> list[float]:
        """The raw (unnormalised) vector the server answers for a text."""
        return fake_embedding(text, dim or self.embedding_dim)

    def paths(self) -> list[str]:
        """The paths of the recorded requests, oldest first."""
        return [request.path for request in self.requests]

    # --- used by the handler ---------------------------------------------------------------------

    def _next(self) -> tuple[float, Failure | None]:
        with self._lock:
            stall = self._stalls.popleft() if self._stalls else 0.0
            failure = self._failures.popleft() if self._failures else None
        return stall, failure

    def _next_chat(self) -> ChatReply | None:
        with self._lock:
            return self._chat_replies.popleft() if self._chat_replies else None


class _Handler(BaseHTTPRequestHandler):
    """Routes POST /v1/chat/completions and POST /v1/embeddings; anything else is a 404."""

    fake: FakeOpenAIServer
    # HTTP/1.0: one request per connection, so a streamed body simply ends when the socket closes
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        # keep pytest output clean; the requests are recorded instead
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.fake.requests.append(RecordedRequest(self.command, self.path, body, headers))
        stall, failure = self.fake._next()
        if stall:
            time.sleep(stall)
        if failure is not None:
            self._error(failure.status, failure.message, failure.headers)
            return
        if self.command == "POST" and self.path == "/v1/chat/completions" and isinstance(body, dict):
            self._chat(body)
        elif self.command == "POST" and self.path == "/v1/embeddings" and isinstance(body, dict):
            self._embeddings(body)
        else:
            self._error(404, f"no route for {self.command} {self.path}", {})

    def _send_json(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict[str, str]) -> None:
        payload = {"error": {"message": message, "type": "fake_error", "param": None, "code": str(status)}}
        self._send_json(status, payload, headers)

    def _chat(self, body: dict[str, Any]) -> None:
        reply = self.fake._next_chat()
        if reply is None:
            # a 400 is not retried, so a test that forgot to enqueue fails at once with this message
            self._error(400, "fake OpenAI server: no chat reply enqueued", {})
            return
        model = reply.model or body.get("model") or self.fake.model
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        calls = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in reply.tool_calls
        ]
        if body.get("stream"):
            self._chat_stream(reply, model, finish, calls)
            return
        message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.chunks)}
        if calls:
            message["content"] = message["content"] or None
            message["tool_calls"] = calls
        payload: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        }
        if reply.usage is not None:
            usage = dict(reply.usage)
            usage.setdefault("total_tokens", usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
            payload["usage"] = usage
        self._send_json(200, payload, {})

    def _chat_stream(self, reply: ChatReply, model: str, finish: str, calls: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas.extend({"content": chunk} for chunk in reply.chunks)
        if calls:
            deltas.append({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]})
        events = [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None} for delta in deltas]
        events.append({"index": 0, "delta": {}, "finish_reason": finish, "logprobs": None})
        for choice in events:
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [choice],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _embeddings(self, body: dict[str, Any]) -> None:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            self._error(400, "fake OpenAI server: input must be a string or a list of strings", {})
            return
        dim = body.get("dimensions") or self.fake.embedding_dim
        # the openai client asks for base64 (packed little-endian float32) unless told otherwise
        packed = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(fake_embedding(text, dim), packed)}
            for i, text in enumerate(texts)
        ]
        if self.fake.reverse_embeddings:
            data.reverse()
        payload = {
            "object": "list",
            "data": data,
            "model": body.get("model") or self.fake.model,
            "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
        }
        self._send_json(200, payload, {})
