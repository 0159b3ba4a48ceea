"""The tool agent: a LangGraph loop of model and memory tools over a user's Session.

    model --(tool calls)--> tools --> model ... --(no tool calls)--> end
                                  \\--(max_steps reached)--> end (a clear stop)

The model node calls `LLM.complete` with the memory tool schemas; the tools node carries out every
call through the kernel (`memos.tools.memory.MemoryTools`) and answers each with a tool message.
With a LangGraph checkpointer, a `thread_id` continues the same conversation across invocations.

    agent = ToolAgent(alice, namespace=("alice", "assistant"), llm=llm)
    result = agent.invoke("Remember that my sister is called Ana.")
    result.text, result.steps, result.tool_results
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypedDict

from memos.cube import Namespace, ns_path, parse_namespace
from memos.errors import UserError
from memos.hooks import Register, hookimpl
from memos.llm.base import LLM, Completion, Message, ToolCall, ToolSchema
from memos.tools.memory import MemoryTools, ToolResult

if TYPE_CHECKING:
    from memos.kernel import Session

#: most model calls one invocation may make
MAX_STEPS_LIMIT = 100

DEFAULT_SYSTEM = (
    "You are a helpful assistant with a long-term memory (namespace {namespace}). "
    "Before answering about anything you may have been told earlier, look it up with memory_search. "
    "Store each new lasting fact with memory_insert, correct a stored fact with memory_update and remove "
    "a wrong one with memory_forget, using the ids search results give. "
    "When you have what you need, answer without calling a tool."
)

StopReason = Literal["answer", "max_steps"]


class ToolExecutor(Protocol):
    """What the tools node needs: schemas to offer the model, and a way to carry out one call."""

    @property
    def schemas(self) -> list[ToolSchema]:
        """The tool schemas offered to the model."""
        ...

    def run(self, call: ToolCall) -> ToolResult:
        """Carry out one call; failures come back as error results."""
        ...


def load_langgraph() -> Any:
    """The langgraph.graph module, or a UserError saying how to install it."""
    try:
        import langgraph.graph as graph
    except ImportError as exc:
        raise UserError("memos agents run on LangGraph, which is not installed: pip install 'memos[agents]'") from exc
    return graph


@dataclass
class TokenCount:
    """Prompt and completion tokens, summed from what the backend reported (Completion.usage)."""

    prompt: int = 0
    completion: int = 0
    #: model calls counted, including those that reported no usage
    calls: int = 0

    def add(self, completion: Completion) -> None:
        """Count one completion."""
        self.calls += 1
        if completion.usage is not None:
            self.prompt += completion.usage.prompt_tokens
            self.completion += completion.usage.completion_tokens

    @property
    def total(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt + self.completion


@dataclass(frozen=True)
class AgentResult:
    """What one invocation of the tool agent produced."""

    #: the final answer (empty when the agent was stopped at max_steps)
    text: str
    #: model calls this invocation made
    steps: int
    #: every tool call this invocation carried out, in order
    tool_results: list[ToolResult]
    #: "answer": the model replied without tool calls; "max_steps": it was stopped
    stopped: StopReason
    #: the whole conversation of the thread (user, assistant and tool messages; no system prompt)
    messages: list[Message]
    tokens: TokenCount = field(default_factory=TokenCount)
    thread_id: str | None = None

    @property
    def finished(self) -> bool:
        """True when the model gave a final answer within max_steps."""
        return self.stopped == "answer"

    @property
    def stop_message(self) -> str:
        """One line saying why the run ended."""
        if self.finished:
            return f"answered after {self.steps} model call(s)"
        return f"stopped after {self.steps} model call(s) (max_steps) without a final answer"


class AgentState(TypedDict, total=False):
    """The graph's state: plain data only, so any LangGraph checkpointer can store it."""

    #: Message.model_dump() of each message, appended by the nodes (kept across a thread)
    messages: Annotated[list[dict[str, Any]], operator.add]
    #: the rest is reset by each invocation's input
    steps: int
    tool_results: list[dict[str, Any]]
    prompt_tokens: int
    completion_tokens: int
    calls: int
    stopped: str


def _check_steps(max_steps: Any) -> int:
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 1 <= max_steps <= MAX_STEPS_LIMIT:
        raise UserError(f"max_steps must be an integer from 1 to {MAX_STEPS_LIMIT}, got {max_steps!r}")
    return max_steps


def resolve_llm(session: Session, llm: LLM | None, who: str) -> LLM:
    """The LLM given, else the home's; UserError when there is none."""
    chosen = llm if llm is not None else session.mos.llm
    if chosen is None:
        raise UserError(f"{who} needs an LLM: pass llm=..., or open the home with MEMOS_LLM set (e.g. openai:MODEL)")
    if not isinstance(chosen, LLM):
        raise UserError(f"{who}: llm must be a memos.llm.LLM, got {type(chosen).__name__}")
    return chosen


class ToolAgent:
    """A LangGraph agent that answers a task with an LLM and the memory tools, as one user."""

    def __init__(
        self,
        session: Session,
        *,
        namespace: Namespace | Sequence[str] | str,
        llm: LLM | None = None,
        tools: ToolExecutor | Sequence[str] | None = None,
        max_steps: int = 8,
        system: str | None = None,
        checkpointer: Any = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> None:
        self.session = session
        self.namespace = parse_namespace(namespace)
        self.llm = resolve_llm(session, llm, "the tool agent")
        if not self.llm.capabilities.tools:
            raise UserError(f"{self.llm.model_id} cannot call tools; the tool agent needs a backend that can")
        if tools is None or (isinstance(tools, Sequence) and not isinstance(tools, str)):
            names = None if tools is None else list(tools)
            self.tools: ToolExecutor = MemoryTools(session, self.namespace, names=names)
        elif isinstance(tools, str):
            raise UserError(f"tools must be a list of tool names or a tool executor, not the string {tools!r}")
        else:
            self.tools = tools
        self.max_steps = _check_steps(max_steps)
        self.system = (system if system is not None else DEFAULT_SYSTEM).replace("{namespace}", ns_path(self.namespace))
        self.checkpointer = checkpointer
        self.sampling: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
        self.graph = self._build()

    # ---- the graph ---------------------------------------------------------------------------

    def _build(self) -> Any:
        graph = load_langgraph()
        builder = graph.StateGraph(AgentState)
        builder.add_node("model", self._model_node)
        builder.add_node("tools", self._tools_node)
        builder.add_edge(graph.START, "model")
        builder.add_conditional_edges("model", self._after_model, {"tools": "tools", "end": graph.END})
        builder.add_conditional_edges("tools", self._after_tools, {"model": "model", "end": graph.END})
        return builder.compile(checkpointer=self.checkpointer)

    def _model_node(self, state: AgentState) -> dict[str, Any]:
        history = [Message.model_validate(m) for m in state.get("messages", [])]
        messages = [Message(role="system", content=self.system), *history] if self.system else history
        completion = self.llm.complete(messages, tools=self.tools.schemas, **self.sampling)
        reply = Message(role="assistant", content=completion.text, tool_calls=completion.tool_calls)
        usage = completion.usage
        return {
            "messages": [reply.model_dump()],
            "steps": state.get("steps", 0) + 1,
            "prompt_tokens": state.get("prompt_tokens", 0) + (usage.prompt_tokens if usage else 0),
            "completion_tokens": state.get("completion_tokens", 0) + (usage.completion_tokens if usage else 0),
            "calls": state.get("calls", 0) + 1,
            "stopped": "" if completion.tool_calls else "answer",
        }

    @staticmethod
    def _after_model(state: AgentState) -> str:
        return "end" if state.get("stopped") == "answer" else "tools"

    def _tools_node(self, state: AgentState) -> dict[str, Any]:
        last = Message.model_validate(state["messages"][-1])
        results = [self.tools.run(call) for call in last.tool_calls]
        update: dict[str, Any] = {
            "messages": [result.to_message().model_dump() for result in results],
            "tool_results": [*state.get("tool_results", []), *(result.as_dict() for result in results)],
        }
        if state.get("steps", 0) >= self.max_steps:
            update["stopped"] = "max_steps"
        return update

    @staticmethod
    def _after_tools(state: AgentState) -> str:
        return "end" if state.get("stopped") == "max_steps" else "model"

    # ---- running -----------------------------------------------------------------------------

    def invoke(self, task: str, thread_id: str | None = None) -> AgentResult:
        """Run the agent on a task (a user message) until it answers or uses max_steps model calls."""
        if not isinstance(task, str) or not task.strip():
            raise UserError("the task is empty: give the agent something to do")
        if thread_id is not None and self.checkpointer is None:
            raise UserError("thread_id continues a conversation, which needs a checkpointer: pass checkpointer=...")
        config: dict[str, Any] = {"recursion_limit": 2 * self.max_steps + 4}
        if self.checkpointer is not None:
            thread_id = thread_id or uuid.uuid4().hex
            config["configurable"] = {"thread_id": thread_id}
        start: AgentState = {
            "messages": [Message(role="user", content=task).model_dump()],
            "steps": 0,
            "tool_results": [],
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "calls": 0,
            "stopped": "",
        }
        final = self.graph.invoke(start, config)
        messages = [Message.model_validate(m) for m in final["messages"]]
        stopped: StopReason = "answer" if final["stopped"] == "answer" else "max_steps"
        # at max_steps the last model text is a step towards an answer, not one
        text = messages[-1].content if stopped == "answer" else ""
        result = AgentResult(
            text=text,
            steps=final["steps"],
            tool_results=[ToolResult.from_dict(r) for r in final["tool_results"]],
            stopped=stopped,
            messages=messages,
            tokens=TokenCount(final["prompt_tokens"], final["completion_tokens"], final["calls"]),
            thread_id=thread_id,
        )
        self.session.mos.emit("memos_on_task_end", user=self.session.user, task=result, success=result.finished)
        return result


@hookimpl
def memos_register_agents(register: Register) -> None:
    """`tool-agent`: ToolAgent(session, namespace=..., llm=..., max_steps=...)."""
    register("tool-agent", ToolAgent)
