"""`OpenAIChat`: any OpenAI-compatible chat server (OpenAI, vLLM's server, Ollama) through the openai client."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from memos.errors import BackendError, UserError
from memos.llm.base import (
    LLM,
    Capabilities,
    Completion,
    MessageLike,
    ToolCall,
    ToolLike,
    Usage,
    normalise_stop,
    validate_messages,
    validate_sampling,
    validate_tools,
)
from memos.log import redact, register_secret

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionChunk


def make_client(base_url: str | None, api_key: str | None, timeout_s: float, max_retries: int) -> Any:
    """An `openai.OpenAI` client for an OpenAI-compatible server, with settings checked."""
    # imported here so `import memos.llm` stays light; only the OpenAI-compatible paths need the client
    from openai import OpenAI

    if timeout_s <= 0:
        raise UserError(f"timeout_s must be positive, got {timeout_s}")
    if max_retries < 0:
        raise UserError(f"max_retries must be >= 0, got {max_retries}")
    key = api_key or os.environ.get("OPENAI_API_KEY")
    register_secret(key)
    if not key:
        if base_url is None:
            raise UserError(
                "the OpenAI API needs a key: set MEMOS_OPENAI_API_KEY, or set MEMOS_OPENAI_BASE_URL "
                "to a local OpenAI-compatible server"
            )
        # local servers (vLLM, Ollama) ignore the key, but the client refuses to start without one
        key = "unused"
    return OpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=max_retries)


class OpenAIChat(LLM):
    """Chat completions from an OpenAI-compatible server; the client retries 429/5xx/timeouts itself."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        if not model:
            raise UserError("an OpenAI chat model needs a name, e.g. MEMOS_LLM=openai:gpt-4o-mini")
        self.model = model
        self.model_id = f"openai:{model}"
        self.capabilities = Capabilities(stream=True, tools=True)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._client = make_client(base_url, api_key, timeout_s, max_retries)
        #: the server's base URL as the client resolved it; named in every error
        self.base_url = str(self._client.base_url).rstrip("/")

    def _request(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None,
        max_tokens: int | None,
        temperature: float | None,
        stop: str | Sequence[str] | None,
    ) -> dict[str, Any]:
        """Validate the inputs and build the keyword arguments of chat.completions.create."""
        checked = validate_messages(messages)
        schemas = validate_tools(tools)
        validate_sampling(max_tokens, temperature)
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [message.to_openai() for message in checked],
        }
        if schemas:
            request["tools"] = [schema.to_openai() for schema in schemas]
        # max_tokens, not max_completion_tokens: vLLM and Ollama both understand it
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        if temperature is not None:
            request["temperature"] = temperature
        stops = normalise_stop(stop)
        if stops is not None:
            request["stop"] = stops
        return request

    def _backend_error(self, exc: openai.APIError) -> BackendError:
        """Turn an openai client error into a BackendError naming server, model and status."""
        import openai

        where = f"the OpenAI-compatible server at {self.base_url}"
        fields: dict[str, Any] = {"url": self.base_url, "model": self.model, "status": None}
        if isinstance(exc, openai.APITimeoutError):
            return BackendError(
                f"{where} did not answer within {self.timeout_s:g} s for model {self.model!r} "
                f"(after {self.max_retries} retries); raise MEMOS_OPENAI_TIMEOUT_S or check the server",
                **fields,
            )
        if isinstance(exc, openai.APIConnectionError):
            return BackendError(
                f"could not connect to {where} for model {self.model!r} (after {self.max_retries} retries): "
                f"{redact(str(exc))}; is it running? check MEMOS_OPENAI_BASE_URL",
                **fields,
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            fields["status"] = status
            detail = _server_message(exc)
            if status in (401, 403):
                return BackendError(
                    f"{where} refused the API key (HTTP {status}) for model {self.model!r}: {detail}; "
                    "check MEMOS_OPENAI_API_KEY",
                    **fields,
                )
            if status == 404:
                return BackendError(
                    f"{where} has no model {self.model!r} (HTTP 404): {detail}; check the model name in "
                    "MEMOS_LLM and that MEMOS_OPENAI_BASE_URL ends in /v1",
                    **fields,
                )
            return BackendError(f"{where} failed for model {self.model!r} (HTTP {status}): {detail}", **fields)
        return BackendError(f"{where} failed for model {self.model!r}: {redact(str(exc))}", **fields)

    def complete(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Completion:
        """One chat completion; tool calls come back parsed, malformed arguments marked invalid."""
        import openai

        request = self._request(messages, tools, max_tokens, temperature, stop)
        try:
            response = self._client.chat.completions.create(**request)
        except openai.APIError as exc:
            raise self._backend_error(exc) from exc
        return self._completion(response)

    def _completion(self, response: ChatCompletion) -> Completion:
        """Convert the client's response object into a Completion."""
        if not response.choices:
            raise BackendError(
                f"the OpenAI-compatible server at {self.base_url} returned no choices for model {self.model!r}",
                url=self.base_url,
                model=self.model,
                status=None,
            )
        choice = response.choices[0]
        calls: list[ToolCall] = []
        for call in choice.message.tool_calls or []:
            # custom (non-function) tool calls cannot come back: we only ever send function tools
            function = getattr(call, "function", None)
            if function is None:
                continue
            calls.append(ToolCall.parse(call.id, function.name, function.arguments))
        usage = None
        if response.usage is not None:
            details = getattr(response.usage, "prompt_tokens_details", None)
            usage = Usage(
                prompt_tokens=response.usage.prompt_tokens or 0,
                completion_tokens=response.usage.completion_tokens or 0,
                # OpenAI and vLLM (--enable-prompt-tokens-details) report the prefix-cached part here
                cached_tokens=(getattr(details, "cached_tokens", None) or 0) if details is not None else 0,
            )
        return Completion(
            text=choice.message.content or "",
            tool_calls=calls,
            finish_reason=choice.finish_reason or "unknown",
            usage=usage,
            model=response.model or self.model,
        )

    def stream(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Iterator[str]:
        """Stream the answer's text deltas (server-sent events); the request is sent before this returns."""
        import openai

        request = self._request(messages, tools, max_tokens, temperature, stop)
        try:
            chunks = self._client.chat.completions.create(**request, stream=True)
        except openai.APIError as exc:
            raise self._backend_error(exc) from exc
        return self._deltas(chunks)

    def _deltas(self, chunks: openai.Stream[ChatCompletionChunk]) -> Iterator[str]:
        """Yield the non-empty text deltas of choice 0, closing the response when done or abandoned."""
        import openai

        try:
            with chunks:
                for chunk in chunks:
                    for choice in chunk.choices:
                        if choice.index == 0 and choice.delta.content:
                            yield choice.delta.content
        except openai.APIError as exc:
            raise self._backend_error(exc) from exc


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's own error message when its body has one, else the client's."""
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return redact(message)
    return redact(exc.message)
