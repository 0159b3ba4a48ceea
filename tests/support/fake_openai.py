"""A small OpenAI-compatible HTTP server on 127.0.0.1 for tests, with vLLM's prefix-cache metrics and LoRA routes."""

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

#: vLLM's default KV-cache block size: prefix-cache hits come in whole blocks of this many tokens
PREFIX_BLOCK_SIZE = 16


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


def prompt_tokens(messages: Any) -> str:
    """The crude tokens the server counts for prefix caching: one per character of the rendered messages."""
    if not isinstance(messages, list):
        return ""
    parts = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content) if content is not None else ""
        if message.get("tool_calls"):
            text += json.dumps(message["tool_calls"])
        # a role marker, as a chat template writes one: the same words under another role are another prompt
        parts.append(f"<|{message.get('role')}|>{text}")
    return "".join(parts)


def cached_tokens(prompt: str, seen: list[str], block_size: int = PREFIX_BLOCK_SIZE) -> int:
    """How many of `prompt`'s tokens a prefix cache holding the full blocks of the `seen` prompts would hit."""
    longest = 0
    for earlier in seen:
        common = 0
        for a, b in zip(prompt, earlier, strict=False):
            if a != b:
                break
            common += 1
        longest = max(longest, common)
    # like vLLM: whole blocks only, and the last prompt token is always computed (its logits are needed)
    return max(0, min(longest, len(prompt) - 1)) // block_size * block_size


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

    def __init__(self, embedding_dim: int = 8, model: str = "fake-model", *, check_models: bool = False) -> None:
        self.embedding_dim = embedding_dim
        #: the model named in replies when neither the reply nor the request names one
        self.model = model
        #: like vLLM, answer 404 to chat requests naming neither `model` nor a loaded LoRA adapter
        self.check_models = check_models
        #: when set, GET /metrics serves this text as is instead of the counted prefix-cache metrics
        self.metrics_text: str | None = None
        #: False: the LoRA endpoints are missing, as on a vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
        self.runtime_lora_updating = True
        #: every request received, oldest first
        self.requests: list[RecordedRequest] = []
        #: when True, /embeddings lists its data items in reverse order (clients must sort by index)
        self.reverse_embeddings = False
        # invariant: these queues are only touched under _lock (handlers run on their own threads)
        self._chat_replies: deque[ChatReply] = deque()
        self._failures: deque[Failure] = deque()
        self._stalls: deque[float] = deque()
        # invariant: also only under _lock; queries >= hits, both in prompt_tokens() units
        self._num_prefix_queries = 0
        self._num_prefix_hits = 0
        self._model_to_prompts: dict[str, list[str]] = {}
        self._adapter_to_path: dict[str, str] = {}
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

    @property
    def prefix_cache_counts(self) -> tuple[int, int]:
        """(queried tokens, hit tokens) of the prefix cache so far."""
        with self._lock:
            return self._num_prefix_queries, self._num_prefix_hits

    @property
    def adapters(self) -> dict[str, str]:
        """The loaded LoRA adapters: name to path."""
        with self._lock:
            return dict(self._adapter_to_path)

    def render_metrics(self) -> str:
        """The Prometheus text GET /metrics serves: vLLM V1's prefix-cache counters, with HELP, TYPE and _created."""
        queries, hits = self.prefix_cache_counts
        labels = f'{{engine="0",model_name="{self.model}"}}'
        lines = []
        for name, value, help_text in (
            ("vllm:prefix_cache_queries", queries, "Prefix cache queries, in terms of number of queried tokens."),
            ("vllm:prefix_cache_hits", hits, "Prefix cache hits, in terms of number of cached tokens."),
        ):
            lines += [
                f"# HELP {name}_total {help_text}",
                f"# TYPE {name}_total counter",
                f"{name}_total{labels} {float(value)}",
                f"# HELP {name}_created {help_text}",
                f"# TYPE {name}_created gauge",
                f"{name}_created{labels} 1.7e+09",
            ]
        return "\n".join(lines) + "\n"

    # --- used by the handler ---------------------------------------------------------------------

    def _next(self) -> tuple[float, Failure | None]:
        with self._lock:
            stall = self._stalls.popleft() if self._stalls else 0.0
            failure = self._failures.popleft() if self._failures else None
        return stall, failure

    def _next_chat(self) -> ChatReply | None:
        with self._lock:
            return self._chat_replies.popleft() if self._chat_replies else None

    def _serves(self, model: Any) -> bool:
        with self._lock:
            return not self.check_models or model == self.model or model in self._adapter_to_path

    def _count_prefix(self, model: str, messages: Any) -> None:
        # vLLM keys cached blocks by LoRA too, so each model (base or adapter) has its own prompts
        prompt = prompt_tokens(messages)
        with self._lock:
            seen = self._model_to_prompts.setdefault(model, [])
            self._num_prefix_queries += len(prompt)
            self._num_prefix_hits += cached_tokens(prompt, seen)
            seen.append(prompt)

    def _load_adapter(self, name: str, path: str) -> bool:
        with self._lock:
            if name in self._adapter_to_path:
                return False
            self._adapter_to_path[name] = path
            return True

    def _unload_adapter(self, name: str) -> bool:
        with self._lock:
            return self._adapter_to_path.pop(name, None) is not None


class _Handler(BaseHTTPRequestHandler):
    """Routes chat completions, embeddings and vLLM's extras (see _handle); anything else is a 404."""

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
        route = (self.command, self.path)
        lora_routes = (("POST", "/v1/load_lora_adapter"), ("POST", "/v1/unload_lora_adapter"))
        if route in lora_routes and not self.fake.runtime_lora_updating:
            # vLLM registers these routes only with runtime LoRA updating on; without them FastAPI answers this
            self._send_json(404, {"detail": "Not Found"}, {})
        elif route == ("POST", "/v1/chat/completions") and isinstance(body, dict):
            self._chat(body)
        elif route == ("POST", "/v1/embeddings") and isinstance(body, dict):
            self._embeddings(body)
        elif route == ("GET", "/metrics"):
            text = self.fake.metrics_text if self.fake.metrics_text is not None else self.fake.render_metrics()
            self._send_text(200, text, "text/plain; version=0.0.4; charset=utf-8")
        elif route == ("GET", "/v1/models"):
            self._models()
        elif route == ("POST", "/v1/load_lora_adapter") and isinstance(body, dict):
            self._load_lora(body)
        elif route == ("POST", "/v1/unload_lora_adapter") and isinstance(body, dict):
            self._unload_lora(body)
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

    def _send_text(self, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict[str, str], kind: str = "fake_error") -> None:
        payload = {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}
        self._send_json(status, payload, headers)

    def _models(self) -> None:
        base = {"id": self.fake.model, "object": "model", "created": 0, "owned_by": "vllm"}
        cards = [{**base, "root": self.fake.model, "parent": None}]
        cards += [
            {**base, "id": name, "root": path, "parent": self.fake.model} for name, path in self.fake.adapters.items()
        ]
        self._send_json(200, {"object": "list", "data": cards}, {})

    def _load_lora(self, body: dict[str, Any]) -> None:
        # vLLM's messages, types and statuses, so clients can be tested against its real answers
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            self._error(400, "Both 'lora_name' and 'lora_path' must be provided.", {}, "InvalidUserInput")
        elif not self.fake._load_adapter(str(name), str(path)):
            self._error(400, f"The lora adapter '{name}' has already been loaded.", {}, "InvalidUserInput")
        else:
            self._send_text(200, f"Success: LoRA adapter '{name}' added successfully.")

    def _unload_lora(self, body: dict[str, Any]) -> None:
        name = body.get("lora_name")
        if not name:
            message = "either 'lora_name' and 'lora_int_id' needs to be provided."
            self._error(400, message, {}, "InvalidUserInput")
        elif not self.fake._unload_adapter(str(name)):
            self._error(404, f"The lora adapter '{name}' cannot be found.", {}, "NotFoundError")
        else:
            self._send_text(200, f"Success: LoRA adapter '{name}' removed successfully.")

    def _chat(self, body: dict[str, Any]) -> None:
        if not self.fake._serves(body.get("model")):
            self._error(404, f"The model `{body.get('model')}` does not exist.", {}, "NotFoundError")
            return
        self.fake._count_prefix(str(body.get("model")), body.get("messages"))
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
