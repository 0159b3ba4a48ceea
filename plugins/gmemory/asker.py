"""The one way G-Memory talks to a model: a system and a user message through memos' LLM protocol, counted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memos.llm.base import LLM, Message


@dataclass
class Usage:
    """Calls made and tokens spent, per purpose ("key_steps", "finetune", ...) and in total."""

    calls: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_calls(self) -> int:
        """Every call made."""
        return sum(self.calls.values())

    def as_dict(self) -> dict[str, Any]:
        """The counts as plain data."""
        return {
            "calls": dict(self.calls),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class Asker:
    """Sends one system + user prompt and returns the answer's text; counts calls and tokens."""

    def __init__(self, llm: LLM, counter: Any | None = None) -> None:
        self.llm = llm
        #: counts tokens when the backend reports no usage (anything with `count(text) -> int`)
        self.counter = counter
        self.usage = Usage()

    def __call__(
        self,
        purpose: str,
        system: str,
        user: str,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """Ask the model; `purpose` only labels the call in `usage`."""
        messages = [Message(role="system", content=system), Message(role="user", content=user)]
        completion = self.llm.complete(messages, temperature=temperature, max_tokens=max_tokens)
        self.usage.calls[purpose] = self.usage.calls.get(purpose, 0) + 1
        if completion.usage is not None:
            self.usage.prompt_tokens += completion.usage.prompt_tokens
            self.usage.completion_tokens += completion.usage.completion_tokens
        elif self.counter is not None:
            self.usage.prompt_tokens += self.counter.count(system) + self.counter.count(user)
            self.usage.completion_tokens += self.counter.count(completion.text)
        return completion.text
