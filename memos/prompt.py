"""Answering with memory: the working set becomes a prompt whose stable prefix is the activation block.

The prompt is a system message (the fixed instructions, then the namespace's activation block, if any)
and a user message (the rest of the working set, then the question). The system message depends only
on the block's cubes, so its tokens repeat exactly from request to request: a local model injects the
block's stored KV cache there, and a vLLM server finds them in its prefix cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memos.cube import Namespace
from memos.errors import UserError
from memos.llm.base import LLM, Completion
from memos.scheduler import WorkingSet
from memos.tiers.activation import SYSTEM_PROMPT

if TYPE_CHECKING:
    from memos.kernel import MemOS, Session

#: what `ask` says when no model is configured (one line: what to set)
NO_LLM = "no LLM is configured: set MEMOS_LLM to hf:/path/to/model, vllm:http://HOST:PORT/v1#MODEL or openai:MODEL"


@dataclass
class Answer:
    """A reply with memory, and what it was built from."""

    text: str
    working_set: WorkingSet
    completion: Completion
    #: prompt tokens served from the namespace's KV block (or reported cached by the server)
    cached_tokens: int = 0
    #: adapters the reply was generated through
    adapters: list[str] = field(default_factory=list)


def messages_for(working: WorkingSet, question: str) -> list[dict[str, str]]:
    """The chat messages for a question: block as the system message, the rest of the working set, the question."""
    rest = working.render_rest()
    user = f"{rest}\n\nQuestion: {question}" if rest else f"Question: {question}"
    return [{"role": "system", "content": working.system or SYSTEM_PROMPT}, {"role": "user", "content": user}]


def answer(
    session: Session,
    namespace: Namespace | Sequence[str] | str,
    question: str,
    *,
    budget_tokens: int,
    max_tokens: int | None,
    temperature: float | None,
) -> Answer:
    """Build the working set, then ask the kernel's LLM with the block injected and the adapters active."""
    mos = session.mos
    if mos.llm is None:
        raise UserError(NO_LLM)
    working = session.context(namespace, question, budget_tokens)
    messages = messages_for(working, question)
    served = serving(mos, working)
    completion = served.llm.complete(messages, max_tokens=max_tokens, temperature=temperature, **served.extra)
    cached = completion.usage.cached_tokens if completion.usage is not None else 0
    return Answer(
        text=completion.text,
        working_set=working,
        completion=completion,
        cached_tokens=cached,
        adapters=served.adapters,
    )


@dataclass
class Serving:
    """The kernel's LLM set up for one working set: the model to call, its active adapters, and call extras."""

    llm: LLM
    #: names of the LoRA adapters the model answers through
    adapters: list[str]
    #: keyword arguments for `complete` / `stream`: the KV block to inject (`kv`), when one is usable
    extra: dict[str, Any]


def serving(mos: MemOS, working: WorkingSet) -> Serving:
    """The kernel's LLM answering through the working set's adapters, with its KV block injected when usable.

    The working set's block and adapters were chosen for the kernel's LLM (`mos.llm`), so only that
    model may be served this way; UserError when none is configured.
    """
    if mos.llm is None:
        raise UserError(NO_LLM)
    llm, adapters = mos.adapters.serve(mos.llm, working.adapters)
    extra: dict[str, Any] = {}
    # a block's KV was computed by the base model: with adapters on the attention projections the
    # adapted model would compute other keys and values, so the prefix is prefilled instead
    if working.activation is not None and working.activation.blob is not None and not adapters:
        extra["kv"] = mos.activation.kv(working.activation)
    return Serving(llm=llm, adapters=adapters, extra=extra)
