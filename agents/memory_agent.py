"""The memory agent: a LangGraph StateGraph recall -> respond -> memorize over a memos session.

- recall: the kernel's working set for the user's latest message (`Session.context`).
- respond: one LLM call. The prompt is the one `ask` builds (`memos.prompt.messages_for`: the
  instructions and activation block as the system message, the rest of the working set before the
  message), with the thread's earlier messages, trimmed to a token budget, in between. The text
  chunks are streamed to the caller as they come, through LangGraph's custom stream.
- memorize: a memory policy sees the exchange (the user's message, then the reply) and its
  operations are applied through the kernel (`apply_ops`), so ACL, audit and versions apply.

Threads are checkpointed by LangGraph's SqliteSaver in the home (`memos.agents.threads`), so the
same thread id resumes the conversation after the home is closed and opened again. A thread's
messages change only once a reply was produced: a failing model call leaves the conversation as it was.
"""

from __future__ import annotations

import dataclasses
import operator
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from memos import inputs
from memos.cube import MemCube, Namespace, ns_path, parse_namespace
from memos.errors import BackendError, MemosError, UserError
from memos.hooks import Register, hookimpl
from memos.llm.base import LLM, validate_sampling
from memos.policy import MemoryOp, Observation, OpResult, Policy, apply_ops
from memos.prompt import Serving, messages_for, serving
from memos.scheduler import WorkingSet, render_items

from .threads import check_thread_id, open_thread_store, thread_key
from .tool_agent import load_langgraph

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph

    from memos.kernel import Session

#: what the agent says when there is no model to answer with (one line: what to set)
NO_LLM = (
    "no LLM is configured: set MEMOS_LLM to openai:MODEL (with MEMOS_OPENAI_BASE_URL for a local "
    "OpenAI-compatible server, MEMOS_OPENAI_API_KEY for a hosted one), hf:/path/to/model or "
    "vllm:http://HOST:PORT/v1#MODEL"
)
#: the thread a message goes to when none is named
DEFAULT_THREAD = "default"
#: the speaker the agent's replies are stored under
ASSISTANT = "assistant"
#: tokens a chat message costs beyond its text (role and separators), as chat formats count them
MESSAGE_OVERHEAD = 4
_MAX_BUDGET = 1_000_000


class ChatTurn(TypedDict):
    """One message of a thread: role 'user' or 'assistant', and its text."""

    role: str
    content: str


class MemoryState(TypedDict, total=False):
    """The checkpointed state of a thread."""

    #: the user's latest message (the input of a run)
    input: str
    #: the namespace the thread talks about ('a/b'); a thread stays in one namespace
    namespace: str
    #: the conversation so far; each run appends the user's message and the reply
    messages: Annotated[list[ChatTurn], operator.add]
    #: the working set of the latest turn, rendered as prompt text, and its tokens
    context: str
    context_tokens: int
    #: ids of the cubes the latest turn's memorize step wrote
    memorized: list[str]


@dataclass
class Reply:
    """One turn of the agent: the reply, the working set it was built from, and the memory it wrote."""

    text: str
    thread_id: str
    #: the working set the prompt carried (turns already in the thread's history left out)
    working_set: WorkingSet
    #: what the policy's operations came to, in order (failed ones carry their error)
    ops: list[OpResult]
    #: the thread's earlier messages sent with the message (the newest that fit the history budget)
    history: list[ChatTurn]
    #: the request exactly as sent to the model
    messages: list[dict[str, str]]
    #: tokens of the request, of its history part (kernel's tokenizer, MESSAGE_OVERHEAD per message)
    prompt_tokens: int
    history_tokens: int
    #: LoRA adapters the reply was generated through
    adapters: list[str] = field(default_factory=list)

    @property
    def written(self) -> list[MemCube]:
        """The cubes the memorize step inserted, updated or forgot."""
        return [result.cube for result in self.ops if result.ok and result.cube is not None]

    @property
    def failed(self) -> list[OpResult]:
        """The policy's operations that could not be applied."""
        return [result for result in self.ops if not result.ok]


class ReplyStream(Iterator[str]):
    """The text chunks of a reply as the model produces them; `.reply` holds the whole turn once they are read."""

    def __init__(self, run: Callable[[Callable[[Reply], None]], Iterator[str]]) -> None:
        self._reply: Reply | None = None
        self._chunks = run(self._finish)

    def _finish(self, reply: Reply) -> None:
        self._reply = reply

    def __iter__(self) -> ReplyStream:
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def close(self) -> None:
        """Stop reading: the model call is abandoned and the thread keeps its earlier messages."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    @property
    def done(self) -> bool:
        """True once every chunk was read and the turn was saved."""
        return self._reply is not None

    @property
    def reply(self) -> Reply:
        """The finished turn; UserError while chunks are still unread."""
        if self._reply is None:
            raise UserError("the reply is not finished: read the stream to its end first")
        return self._reply


@dataclass
class _Run:
    """What one run's steps hand each other beside the checkpointed state (objects, not data)."""

    working: WorkingSet
    history: list[ChatTurn] = field(default_factory=list)
    request: list[dict[str, str]] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    text: str = ""
    prompt_tokens: int = 0
    history_tokens: int = 0
    ops: list[OpResult] = field(default_factory=list)

    def reply(self, thread_id: str) -> Reply:
        """This run as a Reply."""
        return Reply(
            text=self.text,
            thread_id=thread_id,
            working_set=self.working,
            ops=self.ops,
            history=self.history,
            messages=self.request,
            prompt_tokens=self.prompt_tokens,
            history_tokens=self.history_tokens,
            adapters=self.adapters,
        )


class MemoryAgent:
    """A chat agent with memory: each message is answered from the working set and remembered by a policy."""

    def __init__(
        self,
        session: Session,
        *,
        namespace: Namespace | Sequence[str] | str,
        llm: LLM | None = None,
        policy: str | Policy = "heuristic",
        budget_tokens: int = 1500,
        history_tokens: int = 2000,
        max_tokens: int | None = None,
        temperature: float | None = None,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
    ) -> None:
        """Bind the agent to a session and namespace; the model defaults to the kernel's (`mos.llm`).

        Without a checkpointer, threads go to the home's thread database (closed by `close`).
        """
        mos = session.mos
        self.session = session
        self.namespace: Namespace = parse_namespace(namespace)
        self.llm: LLM = _model(llm if llm is not None else mos.llm)
        self.budget_tokens = _budget(budget_tokens, "the working-set token budget")
        self.history_tokens = _budget(history_tokens, "the history token budget")
        validate_sampling(max_tokens, temperature)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.policy = _policy(policy)
        self.policy.reset()
        # invariant: _runs holds the steps' hand-over of the runs in flight, by thread key, under _lock;
        # _active holds the thread keys a ReplyStream of this agent is running
        self._runs: dict[str, _Run] = {}
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._owns_checkpointer = checkpointer is None
        # opened last, so a bad argument above never leaves a database connection behind
        self.checkpointer: BaseCheckpointSaver[Any] = checkpointer or open_thread_store(mos)
        #: the compiled StateGraph recall -> respond -> memorize (invoke it with `config(thread_id)`)
        self.graph: CompiledStateGraph[Any, Any, Any, Any] = self._build()

    # ---- public calls ------------------------------------------------------------------------

    def config(self, thread_id: str = DEFAULT_THREAD) -> RunnableConfig:
        """The LangGraph config of one of the user's threads (its checkpoint key is `USER/THREAD`)."""
        return {"configurable": {"thread_id": thread_key(self.session.user, thread_id)}}

    def stream(self, text: str, *, thread_id: str = DEFAULT_THREAD) -> ReplyStream:
        """Answer a message, yielding the reply's text chunks as they come; `.reply` afterwards.

        Bad input (an empty message, a bad thread id, a thread of another namespace) fails here,
        before anything runs. The model call starts at the first chunk read.
        """
        self._check_open()
        message = inputs.text(text, self.session.mos.settings.max_text_chars, "the message")
        config = self.config(thread_id)
        self._check_namespace(self.graph.get_state(config).values.get("namespace"), thread_id)
        return ReplyStream(lambda finish: self._run(message, thread_id, config, finish))

    def invoke(self, text: str, *, thread_id: str = DEFAULT_THREAD) -> Reply:
        """Answer a message and return the whole turn."""
        replies = self.stream(text, thread_id=thread_id)
        for _ in replies:
            pass
        return replies.reply

    def history(self, thread_id: str = DEFAULT_THREAD) -> list[ChatTurn]:
        """The messages of a thread so far, oldest first (empty for a new thread)."""
        self._check_open()
        return list(self.graph.get_state(self.config(thread_id)).values.get("messages", []))

    def close(self) -> None:
        """Close the thread database the agent opened (a checkpointer passed in is left open)."""
        if self._closed:
            return
        self._closed = True
        conn = getattr(self.checkpointer, "conn", None)
        if self._owns_checkpointer and conn is not None:
            conn.close()

    def __enter__(self) -> MemoryAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the graph ---------------------------------------------------------------------------

    def _build(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        # LangGraph is imported here, not with the module: registering the plugin stays cheap
        graph = load_langgraph()
        builder = graph.StateGraph(MemoryState)
        builder.add_node("recall", self._recall)
        builder.add_node("respond", self._respond)
        builder.add_node("memorize", self._memorize)
        builder.add_edge(graph.START, "recall")
        builder.add_edge("recall", "respond")
        builder.add_edge("respond", "memorize")
        builder.add_edge("memorize", graph.END)
        return builder.compile(checkpointer=self.checkpointer, name="memory-agent")

    def _recall(self, state: MemoryState, config: RunnableConfig) -> dict[str, Any]:
        """Step 1: the working set for the latest message."""
        key = _key_of(config)
        self._check_namespace(state.get("namespace"), key)
        message = inputs.text(state.get("input"), self.session.mos.settings.max_text_chars, "the message")
        working = self.session.context(self.namespace, message, self.budget_tokens)
        with self._lock:
            self._runs[key] = _Run(working=working)
        return {"namespace": ns_path(self.namespace), "context": working.render(), "context_tokens": working.tokens}

    def _respond(self, state: MemoryState, config: RunnableConfig) -> dict[str, Any]:
        """Step 2: one model call, its chunks streamed out; the exchange joins the thread."""
        key = _key_of(config)
        message = state.get("input") or ""
        with self._lock:
            run = self._runs.get(key)
        if run is None:  # resumed from a checkpoint taken after recall: the working set is rebuilt
            run = _Run(working=self.session.context(self.namespace, message, self.budget_tokens))
            with self._lock:
                self._runs[key] = run
        count = self.session.mos.tokenizer.count
        run.history, run.history_tokens = trim_history(state.get("messages", []), self.history_tokens, count)
        run.working = without_turns(run.working, run.history, key, self.session.user, count)
        system, user = messages_for(run.working, message)
        run.request = [system, *[{"role": turn["role"], "content": turn["content"]} for turn in run.history], user]
        run.prompt_tokens = sum(count(m["content"]) + MESSAGE_OVERHEAD for m in run.request)
        served = self._serving(run.working)
        run.adapters = served.adapters
        from langgraph.config import get_stream_writer

        write = get_stream_writer()
        pieces: list[str] = []
        options = {"max_tokens": self.max_tokens, "temperature": self.temperature, **served.extra}
        for chunk in served.llm.stream(run.request, **options):
            pieces.append(chunk)
            write({"token": chunk})
        run.text = "".join(pieces)
        exchange: list[ChatTurn] = [{"role": "user", "content": message}, {"role": "assistant", "content": run.text}]
        # the context as sent: without the turns the history already carried
        return {"messages": exchange, "context": run.working.render(), "context_tokens": run.working.tokens}

    def _memorize(self, state: MemoryState, config: RunnableConfig) -> dict[str, Any]:
        """Step 3: the policy turns the exchange into memory operations, applied through the kernel."""
        key = _key_of(config)
        messages = state.get("messages", [])
        first = len(messages) - 2
        results: list[OpResult] = []
        for index, turn in enumerate(messages[first:], start=first):
            speaker = self.session.user if turn["role"] == "user" else ASSISTANT
            seen = Observation(
                text=f"{speaker}: {turn['content']}",
                index=index,
                speaker=speaker,
                metadata={"session_id": key, "turn_id": f"{key}:{index + 1}"},
            )
            # each observation's operations are applied before the next is observed (as ingest does),
            # so the policy sees what it has just written
            results += apply_ops(self.session, self.namespace, self._observe(seen), policy=self.policy.name)
        with self._lock:
            run = self._runs.get(key)
        if run is not None:
            run.ops = results
        return {"memorized": [result.cube.id for result in results if result.ok and result.cube is not None]}

    # ---- helpers -----------------------------------------------------------------------------

    def _run(
        self, message: str, thread_id: str, config: RunnableConfig, finish: Callable[[Reply], None]
    ) -> Iterator[str]:
        """Run the graph on one message, yielding the reply's chunks; hand the finished turn to `finish`."""
        key = _key_of(config)
        with self._lock:
            if key in self._active:
                raise UserError(f"thread {thread_id!r} is still answering a message: read that reply to its end first")
            self._active.add(key)
        try:
            for event in self.graph.stream({"input": message}, config, stream_mode="custom"):
                token = event.get("token") if isinstance(event, dict) else None
                if token:
                    yield token
            with self._lock:
                run = self._runs.get(key)
            if run is None:
                raise BackendError(f"the memory agent's run on thread {thread_id!r} ended without a reply")
            finish(run.reply(thread_id))
        finally:
            with self._lock:
                self._active.discard(key)
                self._runs.pop(key, None)

    def _serving(self, working: WorkingSet) -> Serving:
        """The kernel's model with the working set's block and adapters; any other model as it is."""
        if self.llm is self.session.mos.llm:
            return serving(self.session.mos, working)
        # the block and adapters were chosen for the kernel's model; another model gets plain messages
        return Serving(llm=self.llm, adapters=[], extra={})

    def _observe(self, seen: Observation) -> list[MemoryOp]:
        """The policy's operations for one turn; a policy's own crash becomes a BackendError naming it."""
        name = self.policy.name or type(self.policy).__name__
        try:
            return self.policy.observe(self.session, self.namespace, seen)
        except MemosError:
            raise
        except Exception as exc:
            raise BackendError(
                f"policy {name!r} failed on turn {seen.index}: {type(exc).__name__}: {exc}", policy=name
            ) from exc

    def _check_namespace(self, stored: object, thread: str) -> None:
        path = ns_path(self.namespace)
        if stored is not None and stored != path:
            name = thread.rsplit("/", 1)[-1]
            raise UserError(
                f"thread {name!r} talks about {stored}, not {path}: use --ns {stored} or another thread",
                thread=name,
            )

    def _check_open(self) -> None:
        if self._closed:
            raise UserError("this memory agent is closed: create a new MemoryAgent")


def trim_history(
    messages: Sequence[ChatTurn], budget_tokens: int, count: Callable[[str], int]
) -> tuple[list[ChatTurn], int]:
    """The newest messages whose tokens fit the budget, starting with a user message; and their tokens."""
    kept: list[ChatTurn] = []
    used = 0
    for turn in reversed(messages):
        cost = count(turn["content"]) + MESSAGE_OVERHEAD
        if used + cost > budget_tokens:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    # a reply without the message it answers would read as the assistant speaking first
    while kept and kept[0]["role"] != "user":
        used -= count(kept[0]["content"]) + MESSAGE_OVERHEAD
        kept.pop(0)
    return kept, used


def without_turns(
    working: WorkingSet, history: Sequence[ChatTurn], session_id: str, user: str, count: Callable[[str], int]
) -> WorkingSet:
    """The working set without the pages of this thread the history already carries (no turn twice in a prompt)."""
    said = {f"{user if turn['role'] == 'user' else ASSISTANT}: {turn['content']}" for turn in history}
    kept = [
        item
        for item in working.items
        if item.section == "activation"
        or item.cube.header.provenance.session_id != session_id
        or item.cube.text not in said
    ]
    if len(kept) == len(working.items):
        return working
    return dataclasses.replace(working, items=kept, tokens=count(render_items(kept)))


def _key_of(config: RunnableConfig) -> str:
    key = (config.get("configurable") or {}).get("thread_id")
    if not isinstance(key, str) or "/" not in key:
        raise UserError("run the memory agent's graph with agent.config(thread_id) as its config")
    check_thread_id(key.split("/", 1)[1])
    return key


def _model(llm: LLM | None) -> LLM:
    if llm is None:
        raise UserError(NO_LLM)
    if not isinstance(llm, LLM):
        raise UserError(f"llm must be a memos.llm.LLM (e.g. the kernel's mos.llm), not {type(llm).__name__}")
    return llm


def _budget(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_BUDGET:
        raise UserError(f"{what} must be an integer from 1 to {_MAX_BUDGET}, got {value!r}")
    return value


def _policy(policy: str | Policy) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if not isinstance(policy, str):
        raise UserError(f"policy must be a policy name (e.g. 'heuristic') or a Policy, not {type(policy).__name__}")
    from memos.registry import get_registry

    return get_registry().policy(policy)


@hookimpl
def memos_register_agents(register: Register) -> None:
    """`memory-agent`: MemoryAgent(session, namespace=..., llm=..., policy=...)."""
    register("memory-agent", MemoryAgent)
