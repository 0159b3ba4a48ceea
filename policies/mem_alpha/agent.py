"""The Mem-α policy: one fresh single-turn LLM call per chunk, whose tool calls become memory operations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from memos.cube import Namespace
from memos.errors import UserError
from memos.policy import MemoryOp, Observation, Policy

from .backends import POLICY_NAME, KernelBackend
from .memory import MemoryState
from .parse import STOP, calls_from_completion
from .prompt import MAX_NEW_TOKENS, MAX_PROMPT_TOKENS, MAX_RECENT_ITEMS, chunk_messages
from .tools import WRITE_TOOLS, ChunkStats, run_calls

if TYPE_CHECKING:
    from memos.kernel import Session
    from memos.llm.base import LLM

#: "openai": tools sent as schemas, calls read from tool_calls; "text": tools described in the prompt
#: and calls written as ✿ text (the released Mem-α model); "auto": openai when the backend has tools
ToolFormat = Literal["auto", "openai", "text"]
#: the paper's response limit per chunk
MAX_RESPONSE_TOKENS = 2048

NO_LLM = (
    "the mem-alpha policy needs a language model to decide what to remember: set MEMOS_LLM "
    "(e.g. openai:gpt-4o-mini, or a vLLM server running YuWangX/Memalpha-4B) or pass llm= to MemAlphaPolicy"
)


def memorise(
    llm: LLM,
    state: MemoryState,
    chunk: str,
    *,
    index: int = 0,
    tool_format: ToolFormat = "auto",
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    max_recent: int = MAX_RECENT_ITEMS,
    max_new_tokens: int = MAX_NEW_TOKENS,
    max_response_tokens: int = MAX_RESPONSE_TOKENS,
    temperature: float | None = None,
) -> ChunkStats:
    """Ask the model what to do with one chunk, carry out its calls on `state`, and return the chunk's stats."""
    text_tools = tool_format == "text" or (tool_format == "auto" and not llm.capabilities.tools)
    messages = chunk_messages(
        state,
        chunk,
        text_tools=text_tools,
        max_prompt_tokens=max_prompt_tokens,
        max_recent=max_recent,
        max_new_tokens=max_new_tokens,
    )
    completion = llm.complete(
        messages,
        None if text_tools else list(WRITE_TOOLS),
        max_tokens=max_response_tokens,
        temperature=temperature,
        stop=[STOP] if text_tools else None,
    )
    # ✿ text is read in either format: a model may write it even when offered schemas
    calls = calls_from_completion(completion)
    return run_calls(state, calls, index=index, chunk_tokens=state.tokenizer.count(chunk))


def chunk_text(observation: Observation) -> str:
    """The chunk as the model sees it: prefixed by its date (metadata 'date' or 'timestamp') and speaker."""
    text = f"{observation.speaker}: {observation.text}" if observation.speaker else observation.text
    when = observation.metadata.get("date") or observation.metadata.get("timestamp")
    return f"[{when}] {text}" if when else text


class MemAlphaPolicy(Policy):
    """Mem-α (arXiv 2509.25911): an LLM keeps core, semantic and episodic memory with tools, chunk by chunk.

    The memory lives as cubes of the namespace (labels policy=mem-alpha, region=core|semantic|episodic,
    item=<short id>). `observe` reads them, asks the model, and returns the inserts, updates and deletes
    its calls amount to; the caller applies them with `apply_ops`, before the next observation.
    Without an LLM (none given, none configured) `observe` raises UserError: there is no fallback.
    """

    name = POLICY_NAME

    def __init__(
        self,
        llm: LLM | None = None,
        *,
        tool_format: ToolFormat = "auto",
        max_prompt_tokens: int = MAX_PROMPT_TOKENS,
        max_recent: int = MAX_RECENT_ITEMS,
        max_new_tokens: int = MAX_NEW_TOKENS,
        max_response_tokens: int = MAX_RESPONSE_TOKENS,
        temperature: float | None = None,
    ) -> None:
        if tool_format not in ("auto", "openai", "text"):
            raise UserError(f"tool_format must be auto, openai or text, not {tool_format!r}")
        #: the model deciding; None: the home's configured LLM (MEMOS_LLM), looked up at observe time
        self.llm = llm
        self.tool_format: ToolFormat = tool_format
        self.max_prompt_tokens = max_prompt_tokens
        self.max_recent = max_recent
        self.max_new_tokens = max_new_tokens
        self.max_response_tokens = max_response_tokens
        self.temperature = temperature
        #: one entry per observed chunk since the last reset, oldest first
        self.stats: list[ChunkStats] = []

    def observe(self, session: Session, namespace: Namespace, observation: Observation) -> list[MemoryOp]:
        """The memory operations the model's tool calls for this chunk amount to (not yet applied)."""
        llm = self.llm if self.llm is not None else session.mos.llm
        if llm is None:
            raise UserError(NO_LLM, policy=self.name)
        backend = KernelBackend(session, namespace, policy=self.name)
        before = backend.load()
        state = before.copy()
        stats = memorise(
            llm,
            state,
            chunk_text(observation),
            index=observation.index,
            tool_format=self.tool_format,
            max_prompt_tokens=self.max_prompt_tokens,
            max_recent=self.max_recent,
            max_new_tokens=self.max_new_tokens,
            max_response_tokens=self.max_response_tokens,
            temperature=self.temperature,
        )
        self.stats.append(stats)
        return backend.plan(before, state)

    def reset(self) -> None:
        """Drop the per-chunk stats (the memory itself stays in the kernel)."""
        self.stats = []

    @property
    def totals(self) -> dict[str, int]:
        """Calls, successful and failed calls over every chunk since the last reset."""
        return {
            "num_chunks": len(self.stats),
            "num_calls": sum(s.num_calls for s in self.stats),
            "num_ok": sum(s.num_ok for s in self.stats),
            "num_failed": sum(s.num_failed for s in self.stats),
        }
