"""`VLLMChat`: a vLLM server's chat API plus its extras: prefix-cache warming and stats, runtime LoRA adapters."""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from memos.errors import BackendError, UserError
from memos.llm.base import Capabilities, MessageLike
from memos.llm.openai import OpenAIChat
from memos.log import redact

if TYPE_CHECKING:
    import httpx
    import openai

#: how MEMOS_LLM names a vLLM server and the model it serves
SPEC_FORM = "vllm:http://HOST:PORT/v1#MODEL"
# the tool-name rule (letters, digits, '_', '-'): safe as a model name in URLs, logs and JSON alike
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LORA_HINT = "the server must run with --enable-lora and the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
# vLLM V1 counters (token counts) first, then their pre-0.10 names; V0 only had a hit-rate gauge
_COUNTER_PAIRS = (
    ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"),
    ("vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_hits_total"),
)
_HIT_RATE_GAUGE = "vllm:gpu_prefix_cache_hit_rate"
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LABEL_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}


def with_v1(url: str) -> str:
    """The URL without a trailing slash, ending in /v1 (where vLLM serves its OpenAI API)."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a MEMOS_LLM value 'vllm:URL#MODEL' into (base URL ending in /v1, model); UserError if malformed."""
    url, _, model = spec.strip().removeprefix("vllm:").partition("#")
    parts = urlsplit(url.strip())
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "the server URL must start with http:// or https://"
    elif not parts.hostname:
        problem = "the server URL names no host"
    elif parts.query:
        problem = "the server URL must not have a query string"
    elif not model.strip():
        problem = "name the model the server serves after '#'"
    else:
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when it is read
        except ValueError:
            problem = "the port must be a number below 65536"
    if problem is not None:
        raise UserError(f"bad MEMOS_LLM {spec!r}: {problem}; write {SPEC_FORM}", llm=spec)
    return with_v1(f"{parts.scheme}://{parts.netloc}{parts.path}"), model.strip()


@dataclass(frozen=True)
class MetricSample:
    """One sample line of a Prometheus text exposition."""

    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[MetricSample]:
    """The samples of a Prometheus text exposition; comments, blank and malformed lines are skipped."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            sample = _parse_sample(line)
            if sample is not None:
                samples.append(sample)
    return samples


def _parse_sample(line: str) -> MetricSample | None:
    """One `name{label="value",...} value [timestamp]` line, or None when it is not one."""
    match = _METRIC_NAME.match(line)
    if match is None:
        return None
    labels: dict[str, str] = {}
    pos = match.end()
    brace = _skip_spaces(line, pos)
    if line.startswith("{", brace):
        parsed = _parse_labels(line, brace + 1)
        if parsed is None:
            return None
        labels, pos = parsed
    # OpenMetrics may append an exemplar after " # "; only the value matters here
    fields = line[pos:].partition(" # ")[0].split()
    if not line[pos : pos + 1].isspace() or not 1 <= len(fields) <= 2:
        return None
    try:
        value = float(fields[0])  # also reads 1.5e+06, +Inf, -Inf and NaN
    except ValueError:
        return None
    return MetricSample(match.group(), labels, value)


def _parse_labels(line: str, pos: int) -> tuple[dict[str, str], int] | None:
    """The labels starting at `pos` (just after '{') and the position after '}', or None when malformed."""
    labels: dict[str, str] = {}
    while True:
        pos = _skip_spaces(line, pos)
        if line.startswith("}", pos):
            return labels, pos + 1
        match = _LABEL_NAME.match(line, pos)
        if match is None:
            return None
        pos = _skip_spaces(line, match.end())
        if not line.startswith("=", pos):
            return None
        pos = _skip_spaces(line, pos + 1)
        if not line.startswith('"', pos):
            return None
        pos += 1
        chars: list[str] = []
        # a quoted value may hold commas, spaces, '}' and the escapes \" \\ \n
        while pos < len(line) and line[pos] != '"':
            if line[pos] == "\\" and pos + 1 < len(line):
                chars.append(_LABEL_ESCAPES.get(line[pos + 1], line[pos : pos + 2]))
                pos += 2
            else:
                chars.append(line[pos])
                pos += 1
        if pos >= len(line):
            return None
        labels[match.group()] = "".join(chars)
        pos = _skip_spaces(line, pos + 1)
        if line.startswith(",", pos):
            pos += 1
        elif not line.startswith("}", pos):
            return None


def _skip_spaces(line: str, pos: int) -> int:
    """The first position at or after `pos` that is not whitespace."""
    while line[pos : pos + 1].isspace():
        pos += 1
    return pos


@dataclass(frozen=True)
class PrefixCacheStats:
    """A vLLM server's prefix-cache counters since it started, in tokens, summed over its engines and models."""

    #: prompt tokens looked up in the cache
    queries: int
    #: of those, tokens whose KV blocks were found cached
    hits: int
    #: the hit rate the server itself reported, for servers that publish only a rate (vLLM V0's gauge)
    reported_hit_rate: float | None = None

    @property
    def hit_rate(self) -> float:
        """Hits per queried token (the reported rate when there are no counts); 0.0 before any query."""
        if self.reported_hit_rate is not None:
            return self.reported_hit_rate
        return self.hits / self.queries if self.queries else 0.0

    @classmethod
    def from_metrics(cls, text: str) -> PrefixCacheStats | None:
        """Read the stats from a /metrics page; None when it has no prefix-cache metrics."""
        samples = parse_metrics(text)
        for queries_name, hits_name in _COUNTER_PAIRS:
            queries = [s.value for s in samples if s.name == queries_name and math.isfinite(s.value)]
            hits = [s.value for s in samples if s.name == hits_name and math.isfinite(s.value)]
            if queries and hits:
                return cls(queries=round(sum(queries)), hits=round(sum(hits)))
        rates = [s.value for s in samples if s.name == _HIT_RATE_GAUGE and math.isfinite(s.value)]
        if rates:
            # one gauge per model; a rate cannot be summed, and without counts the mean is the best guess
            return cls(queries=0, hits=0, reported_hit_rate=sum(rates) / len(rates))
        return None


class VLLMChat(OpenAIChat):
    """Chat with a vLLM server, warm and measure its prefix cache, and load LoRA adapters into it at runtime."""

    # vLLM applies exactly one LoRA adapter per request
    max_adapters = 1

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        if not model or not model.strip():
            raise UserError(f"a vLLM chat model needs the name the server serves, e.g. MEMOS_LLM={SPEC_FORM}")
        super().__init__(
            model, base_url=with_v1(base_url), api_key=api_key, timeout_s=timeout_s, max_retries=max_retries
        )
        self.model_id = f"vllm:{model}"
        # a server keeps its KV cache to itself, so no kv_injection; it shares cached prefixes between requests
        self.capabilities = Capabilities(stream=True, tools=True, prefix_caching=True, adapters=True)
        #: the model the server was started with; `model` is the adapter's name in a view from with_adapters
        self.base_model = model
        #: the LoRA adapter requests go through; None on the base client
        self.adapter: str | None = None
        #: the server's address without /v1: where /metrics is served
        self.root_url = self.base_url.removesuffix("/v1")
        # invariant: one set shared by a client and all its views, holding the names loaded through any of them
        self._loaded: set[str] = set()
        # invariant: the client with_adapters([]) returns; a view keeps pointing at the client it came from
        self._base: VLLMChat = self
        # invariant: None until vLLM's own endpoints are first used (most clients only chat); only set on _base
        self._http: httpx.Client | None = None

    # --- prefix cache ----------------------------------------------------------------------------

    def warm(self, messages: Sequence[MessageLike]) -> None:
        """Have the server compute and cache the KV blocks of `messages`, the stable prefix of later prompts."""
        import openai

        # one generated token is the cheapest request that makes the server prefill, and so cache, the prompt;
        # vLLM caches full blocks only, so the prefix's last partial block is recomputed by later requests
        request = self._request(messages, None, 1, None, None)
        try:
            self._client.chat.completions.create(**request)
        except openai.APIError as exc:
            raise self._backend_error(exc) from exc

    def prefix_cache_stats(self) -> PrefixCacheStats:
        """The server's prefix-cache counters (all its clients, since it started), read from its /metrics."""
        url = f"{self.root_url}/metrics"
        response = self._send("GET", url, "read its metrics")
        if response.status_code >= 400:
            raise self._status_error(response, "read its metrics at /metrics")
        stats = PrefixCacheStats.from_metrics(response.text)
        if stats is None:
            raise BackendError(
                f"the vLLM server at {self.root_url} exposes no prefix-cache metrics at {url}; start vllm with "
                "--enable-prefix-caching (and without --disable-log-stats)",
                url=url,
                status=response.status_code,
            )
        return stats

    # --- LoRA adapters ---------------------------------------------------------------------------

    @property
    def loaded_adapters(self) -> list[str]:
        """The names of the LoRA adapters loaded through this client or its views, sorted."""
        return sorted(self._loaded)

    def load_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Load the LoRA adapter at `path` (as the server sees it) under `name`; a name already loaded is kept."""
        _check_adapter_name(name)
        where = os.fspath(path) if isinstance(path, str | os.PathLike) else ""
        if not where.strip():
            raise UserError(
                f"LoRA adapter {name!r} needs a path: its directory as the vLLM server sees it", adapter=name
            )
        what = f"load LoRA adapter {name!r} from {where!r}"
        response = self._send(
            "POST", f"{self.base_url}/load_lora_adapter", what, {"lora_name": name, "lora_path": where}
        )
        # vLLM refuses a name it already serves (loaded by anyone, or with --lora-modules); the server keeps
        # the first path under a name, which is the adapter a caller loading that name again wants
        if response.status_code >= 400 and not (
            response.status_code == 400 and "already been loaded" in _response_message(response)
        ):
            raise self._status_error(response, what, adapter=name)
        self._loaded.add(name)

    def unload_adapter(self, name: str) -> None:
        """Unload the LoRA adapter `name` from the server; a name the server does not know counts as unloaded."""
        _check_adapter_name(name)
        what = f"unload LoRA adapter {name!r}"
        response = self._send("POST", f"{self.base_url}/unload_lora_adapter", what, {"lora_name": name})
        if response.status_code >= 400 and not _unknown_adapter(response):
            raise self._status_error(response, what, adapter=name)
        self._loaded.discard(name)

    def with_adapters(self, adapters: Sequence[str]) -> VLLMChat:
        """This client answering through one loaded LoRA adapter (vLLM applies one per request); [] is the base."""
        if isinstance(adapters, str):
            raise UserError(f"adapters must be a list of names, not the string {adapters!r}: write [{adapters!r}]")
        names = list(dict.fromkeys(adapters))
        if not names:
            return self._base
        if len(names) > 1:
            raise UserError(
                f"a vLLM server applies one LoRA adapter per request, got {len(names)}: {', '.join(names)}; "
                "pick one, or merge them into one adapter",
                adapters=names,
            )
        [name] = names
        if name not in self._loaded:
            loaded = ", ".join(sorted(self._loaded)) or "none"
            raise UserError(
                f"LoRA adapter {name!r} is not loaded on the vLLM server at {self.base_url} (loaded: {loaded}); "
                f"load it first with load_adapter({name!r}, PATH)",
                adapter=name,
            )
        if name == self.adapter:
            return self
        # a shallow copy shares the clients and the loaded set; vLLM serves a LoRA under its name as a model
        view = copy.copy(self)
        view.model = name
        view.adapter = name
        view.model_id = f"vllm:{self.base_model}+{name}"
        return view

    def list_models(self) -> list[str]:
        """The ids the server serves: its base model, then the LoRA adapters loaded into it."""
        response = self._send("GET", f"{self.base_url}/models", "list its models")
        if response.status_code >= 400:
            raise self._status_error(response, "list its models")
        try:
            return [str(card["id"]) for card in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(
                f"the vLLM server at {self.base_url} answered /models with no model list ({exc!r})",
                url=f"{self.base_url}/models",
                status=response.status_code,
            ) from exc

    # --- errors ----------------------------------------------------------------------------------

    def _send(self, method: str, url: str, what: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """Send one request to the server; a failure to get any answer is a BackendError naming it."""
        import httpx

        base = self._base
        if base._http is None:
            # only connection failures are retried: a load or unload that reached the server is not repeated
            base._http = httpx.Client(
                timeout=self.timeout_s,
                transport=httpx.HTTPTransport(retries=self.max_retries),
                headers={"authorization": f"Bearer {self._client.api_key}"},
            )
        try:
            return base._http.request(method, url, json=body)
        except httpx.TimeoutException as exc:
            raise BackendError(
                f"the vLLM server at {self.root_url} did not answer within {self.timeout_s:g} s when asked to "
                f"{what}; raise MEMOS_OPENAI_TIMEOUT_S or check the server",
                url=url,
                status=None,
            ) from exc
        except httpx.HTTPError as exc:
            raise BackendError(
                f"could not reach the vLLM server at {self.root_url} to {what} (after {self.max_retries} retries): "
                f"{redact(str(exc))}; is it running? check the URL in MEMOS_LLM",
                url=url,
                status=None,
            ) from exc

    def _status_error(self, response: httpx.Response, what: str, **fields: Any) -> BackendError:
        """A BackendError for an error status from one of vLLM's own endpoints, with a hint who must act."""
        status = response.status_code
        detail = _response_message(response)
        message = f"the vLLM server at {self.root_url} failed to {what} (HTTP {status}): {detail.rstrip('.')}"
        if status in (401, 403):
            message += "; check MEMOS_OPENAI_API_KEY against the server's --api-key"
        elif "adapter" in fields:
            message += f"; {_LORA_HINT}"
        return BackendError(message, url=str(response.request.url), status=status, **fields)

    def _backend_error(self, exc: openai.APIError) -> BackendError:
        """As OpenAIChat's, but a refused connection or an unknown model points at MEMOS_LLM and adapters."""
        import openai

        fields: dict[str, Any] = {"url": self.base_url, "model": self.model, "status": None}
        if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
            return BackendError(
                f"could not connect to the vLLM server at {self.base_url} for model {self.model!r} "
                f"(after {self.max_retries} retries): {redact(str(exc))}; is it running? check the URL in MEMOS_LLM",
                **fields,
            )
        if isinstance(exc, openai.APIStatusError) and exc.status_code == 404:
            fields["status"] = 404
            detail = _message_of(exc.body, exc.message).rstrip(".")
            if self.adapter is not None:
                return BackendError(
                    f"the vLLM server at {self.base_url} does not serve LoRA adapter {self.adapter!r} (HTTP 404): "
                    f"{detail}; it was unloaded or the server restarted: load it again with load_adapter",
                    adapter=self.adapter,
                    **fields,
                )
            return BackendError(
                f"the vLLM server at {self.base_url} does not serve model {self.model!r} (HTTP 404): {detail}; "
                "write the name it serves after '#' in MEMOS_LLM (list_models() shows them)",
                **fields,
            )
        return super()._backend_error(exc)


def _check_adapter_name(name: str) -> None:
    """UserError unless `name` is 1-64 letters, digits, '_' or '-'."""
    if not isinstance(name, str) or not _ADAPTER_NAME.fullmatch(name):
        raise UserError(f"LoRA adapter name {name!r} must be 1-64 letters, digits, '_' or '-'", adapter=name)


def _message_of(body: Any, fallback: str) -> str:
    """The message in an error body (vLLM's {"error": ...} or flat form, FastAPI's {"detail": ...}), secrets masked."""
    return redact(_body_message(body, fallback))


def _body_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str) and inner["message"]:
            return str(inner["message"])
        if isinstance(inner, str) and inner:
            return inner
        if isinstance(body.get("detail"), str) and body["detail"]:
            return str(body["detail"])
    return fallback


def _response_message(response: httpx.Response) -> str:
    """The server's own words in an error response, JSON or plain text."""
    text = response.text.strip()
    try:
        body = response.json()
    except ValueError:
        body = None
    return _message_of(body, text[:300] or response.reason_phrase)


def _unknown_adapter(response: httpx.Response) -> bool:
    """True when vLLM answered that it has no adapter of that name (404 in current versions, 400 before)."""
    message = _response_message(response)
    # FastAPI's bare "Not Found" means the endpoint itself is missing, not the adapter
    return response.status_code in (400, 404) and message != "Not Found" and "cannot be found" in message
