"""Fakes that ship with the package: a scripted LLM (queued replies) and a function LLM (your code answers)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from memos.errors import UserError
from memos.llm.base import (
    LLM,
    Capabilities,
    Completion,
    Message,
    MessageLike,
    ToolLike,
    ToolSchema,
    normalise_stop,
    validate_messages,
    validate_sampling,
    validate_tools,
)

Reply = str | Completion


class ScriptExhausted(RuntimeError):
    """A ScriptedLLM was asked more often than it had replies.

    Deliberately not a MemosError: code under test that handles backend or user errors must not swallow
    a mistake in the test's script.
    """


@dataclass
class Call:
    """One request a fake LLM received, after validation."""

    messages: list[Message]
    tools: list[ToolSchema]
    #: max_tokens, temperature and stop as given (stop normalised to a list or None)
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: True when the request came through stream()
    streamed: bool = False


def _as_completion(reply: Reply, model: str) -> Completion:
    if isinstance(reply, Completion):
        return reply
    if isinstance(reply, str):
        return Completion(text=reply, model=model)
    raise TypeError(f"a fake LLM reply must be a str or a Completion, got {type(reply).__name__}")


def _chunks(text: str, chunk_size: int) -> list[str]:
    return [text[start : start + chunk_size] for start in range(0, len(text), chunk_size)]


class _FakeLLM(LLM):
    """Shared request checking and call recording of the fakes."""

    def __init__(self, model_id: str, chunk_size: int) -> None:
        if chunk_size < 1:
            raise UserError(f"chunk_size must be at least 1, got {chunk_size}")
        self.model_id = model_id
        self.capabilities = Capabilities(stream=True, tools=True)
        self.chunk_size = chunk_size
        #: every request received, oldest first (validated, so tests can compare Message objects)
        self.calls: list[Call] = []

    def _record(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None,
        max_tokens: int | None,
        temperature: float | None,
        stop: str | Sequence[str] | None,
        streamed: bool,
    ) -> Call:
        # the same checks a real backend makes, so code that passes with a fake is valid for a server
        checked = validate_messages(messages)
        schemas = validate_tools(tools)
        validate_sampling(max_tokens, temperature)
        kwargs = {"max_tokens": max_tokens, "temperature": temperature, "stop": normalise_stop(stop)}
        call = Call(messages=checked, tools=schemas, kwargs=kwargs, streamed=streamed)
        self.calls.append(call)
        return call

    def _reply(self, call: Call) -> Completion:
        raise NotImplementedError

    def complete(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Completion:
        """Record the request and answer it."""
        call = self._record(messages, tools, max_tokens, temperature, stop, streamed=False)
        return self._reply(call)

    def stream(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Iterator[str]:
        """Record the request and yield the answer's text in chunks of `chunk_size` characters."""
        call = self._record(messages, tools, max_tokens, temperature, stop, streamed=True)
        return iter(_chunks(self._reply(call).text, self.chunk_size))


class ScriptedLLM(_FakeLLM):
    """Answers from a queue of replies (strings or Completions) and records every request in `.calls`."""

    def __init__(self, replies: Sequence[Reply] = (), *, model_id: str = "scripted", chunk_size: int = 4) -> None:
        super().__init__(model_id, chunk_size)
        #: replies not yet given, next first
        self.replies: deque[Completion] = deque()
        self.enqueue(*replies)

    def enqueue(self, *replies: Reply) -> ScriptedLLM:
        """Add replies to the end of the queue; returns self so set-up can chain."""
        # converted now so a wrong type fails in the test's set-up, not deep inside the code under test
        self.replies.extend(_as_completion(reply, self.model_id) for reply in replies)
        return self

    def _reply(self, call: Call) -> Completion:
        if not self.replies:
            last = call.messages[-1].content
            raise ScriptExhausted(
                f"ScriptedLLM has no reply queued for request {len(self.calls)} (last message: {last[:80]!r}); "
                "enqueue one more reply"
            )
        return self.replies.popleft()


class FunctionLLM(_FakeLLM):
    """Answers with what `fn(messages, tools)` returns (a str or a Completion); records requests in `.calls`."""

    def __init__(
        self,
        fn: Callable[[list[Message], list[ToolSchema]], Reply],
        *,
        model_id: str = "function",
        chunk_size: int = 4,
    ) -> None:
        super().__init__(model_id, chunk_size)
        self.fn = fn

    def _reply(self, call: Call) -> Completion:
        return _as_completion(self.fn(call.messages, call.tools), self.model_id)


# ---- tiny random transformers ----------------------------------------------------------------------

#: a minimal chat template: each message as <|role|>content<|end|>, then <|assistant|> to answer
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|end|>")


def random_tokenizer(corpus: Sequence[str], vocab_size: int = 600) -> Any:
    """A byte-level BPE trained on `corpus`, with special tokens and a chat template (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=list(SPECIAL_TOKENS[3:]),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def random_llama(
    tokenizer: Any,
    *,
    hidden: int = 64,
    intermediate: int | None = None,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int | None = None,
    max_positions: int = 4096,
    initializer_range: float = 0.02,
    seed: int = 0,
) -> Any:
    """A randomly initialised LlamaForCausalLM sized for `tokenizer` (built from a config, no download)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
