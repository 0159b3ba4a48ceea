"""Multi-agent teams on LangGraph, with per-agent and team memory and the `TeamMemory` hooks.

Every team lives under a team namespace, `(owner, "teams", team)`; each agent has its own below
it, `(owner, "teams", team, agent)`. Before it acts, an agent's prompt gets its role prompt, the
text a `TeamMemory` gave its role for this task, and the memories recalled for the task from its
own namespace and from the team's. What it produces is written to its own namespace (the whole
output) and to the team namespace (a short summary); the team's final result goes to the team
namespace too. Cubes are long-term, labelled team/agent/scope/entry.

- `Supervisor`: a supervisor LLM picks the next worker, or FINISH, until FINISH or max_rounds.
- `Pipeline` (memos.agents.pipeline): agents in a fixed order, each reading the previous output.

A team calls its `memory` (any object with the `TeamMemory` methods, e.g. G-Memory) like this:
`on_task_start(task, roles)` before the first agent, `on_agent_message(...)` after every agent step
with `upstream` = the agents whose output that step read, and `on_task_end(success)` at the end,
where success is the user's judge's verdict (`judge(task, output) -> bool`, or an `LLMJudge`).
A whole task is one step of the memory's interaction graph: every message but the last leaves the
step open, so `upstream` may name any agent that spoke earlier in the task; the task's last message
closes it with `action` = the route taken (e.g. "researcher -> writer -> FINISH") and `observation`
= the team's output.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, runtime_checkable

from memos.cube import Namespace, Right, check_user_name, parse_namespace
from memos.errors import UserError
from memos.hooks import Register, hookimpl
from memos.llm.base import LLM, Completion, Message
from memos.summaries import leading_sentence

from .tool_agent import TokenCount, load_langgraph, resolve_llm

if TYPE_CHECKING:
    from memos.kernel import Session

#: the routing answer that ends a supervisor team's task
FINISH = "FINISH"
#: the supervisor's own name (and namespace segment) in a supervisor team
SUPERVISOR = "supervisor"
#: most characters of one agent output that go into another agent's prompt or into memory
MAX_OUTPUT_CHARS = 4000
#: most characters of the summary of one output written to the team namespace
MAX_SUMMARY_CHARS = 300
#: most rounds (worker turns) a supervisor team may be given
MAX_ROUNDS_LIMIT = 50
#: the supervisor graph's route to its end (not a valid agent name, so no worker can take it)
_DONE = "__done__"

Stopped = Literal["finished", "max_rounds", "bad_route"]
Judge = Callable[[str, str], bool]


@runtime_checkable
class TeamMemory(Protocol):
    """The hooks a team calls on a multi-agent memory (G-Memory implements them)."""

    def on_task_start(self, task: str, roles: Sequence[str]) -> dict[str, str]:
        """A new task: return, for each role (agent name), the text to put in that agent's prompt."""
        ...

    def on_agent_message(
        self,
        agent: str,
        message: str,
        *,
        role: str | None = None,
        upstream: Sequence[str] = (),
        action: str | None = None,
        observation: str | None = None,
        reward: float | None = None,
    ) -> None:
        """One agent step: what `agent` said, having read the outputs of the `upstream` agents."""
        ...

    def on_task_end(self, success: bool) -> dict[str, Any]:
        """The task is over: learn from it; return a report (what was stored, insights changed, ...)."""
        ...

    # optional: `abandon() -> bool`, called instead of on_task_end when the task fails with an exception


@dataclass(frozen=True)
class TeamMessage:
    """One agent step of a team's task."""

    agent: str
    content: str
    #: the agents whose outputs this step read, in the order they spoke
    upstream: tuple[str, ...] = ()
    #: for supervisor steps: the route chosen (a worker name or FINISH)
    action: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for graph state)."""
        return {"agent": self.agent, "content": self.content, "upstream": list(self.upstream), "action": self.action}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> TeamMessage:
        """The message `as_dict` gave."""
        return cls(value["agent"], value["content"], tuple(value["upstream"]), value["action"])


@dataclass(frozen=True)
class TeamResult:
    """What a team's task produced."""

    #: the team's answer: the last worker's (or the last pipeline agent's) output
    output: str
    messages: list[TeamMessage]
    #: the judge's verdict (without a judge: the team finished with a non-empty output)
    success: bool
    #: tokens the agents' model calls reported (and an LLMJudge's)
    tokens: TokenCount
    stopped: Stopped = "finished"
    #: what `memory.on_task_end` returned ({} without a memory)
    memory: dict[str, Any] = field(default_factory=dict)
    #: why the run stopped, on one line
    reason: str = ""


class LLMJudge:
    """A success judge that asks an LLM whether an output accomplishes a task (YES or NO)."""

    PROMPT = (
        "Task:\n{task}\n\nOutput:\n{output}\n\n"
        "Does the output fully accomplish the task? Answer with exactly one word: YES or NO."
    )

    def __init__(self, llm: LLM) -> None:
        self.llm = llm
        self.tokens = TokenCount()

    def __call__(self, task: str, output: str) -> bool:
        """True only when the model's answer starts with YES (anything unreadable counts as NO)."""
        completion = self.llm.complete([Message(role="user", content=self.PROMPT.format(task=task, output=output))])
        self.tokens.add(completion)
        words = re.findall(r"[A-Za-z]+", completion.text)
        return bool(words) and words[0].upper() == "YES"


class TeamState(TypedDict, total=False):
    """A team graph's state: plain data, replaced whole by each node."""

    task: str
    #: role -> text from memory.on_task_start
    insights: dict[str, str]
    #: TeamMessage.as_dict() of each step
    messages: list[dict[str, Any]]
    #: ids of the cubes this task wrote (kept out of this task's own recalls)
    written: list[str]
    #: supervisor teams: the next node, worker turns so far, and why the run stopped
    next: str
    rounds: int
    stopped: str
    reason: str
    prompt_tokens: int
    completion_tokens: int
    calls: int


def _ending(messages: Sequence[Mapping[str, Any]], marker: str) -> str:
    """The action that ends a task: the agents that worked, in order, then how it ended (FINISH, STOP ...)."""
    route = [m["agent"] for m in messages if m["action"] is None]
    return " -> ".join([*route, marker] if marker else route) or marker


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def check_segment(name: Any, what: str) -> str:
    """A name that is also a namespace segment, or a UserError naming what it is for."""
    try:
        return check_user_name(name)
    except UserError:
        raise UserError(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit"
        ) from None


def summarize(text: str) -> str:
    """A short extractive summary of an output: its leading sentences, at most MAX_SUMMARY_CHARS."""
    flat = " ".join(text.split())
    first = leading_sentence(flat)
    rest = flat[len(first) :].strip()
    summary = f"{first} {leading_sentence(rest)}".strip() if rest and len(first) < MAX_SUMMARY_CHARS // 2 else first
    return _clip(summary, MAX_SUMMARY_CHARS)


class Team(ABC):
    """What every team shares: namespaces, prompts with recalled memories, memory writes and hooks."""

    #: the agents in the order `on_task_start` lists them; set by subclasses
    roles: list[str]

    def __init__(
        self,
        session: Session,
        *,
        team: str,
        role_prompts: Mapping[str, str],
        llm: LLM | Mapping[str, LLM] | None,
        memory: TeamMemory | None,
        judge: Judge | None,
        owner: str | None,
        k: int,
        max_tokens: int | None,
        temperature: float | None,
    ) -> None:
        self.session = session
        self.team = check_segment(team, "team name")
        self.owner = check_segment(owner if owner is not None else session.user, "team owner")
        self.namespace: Namespace = parse_namespace((self.owner, "teams", self.team))
        # fails now, not after the first model call, when the user cannot write the team's memory
        session.mos.governance.require(session.user, self.namespace, Right.write)
        self.role_prompts = dict(role_prompts)
        self.llms = self._llms(llm)
        if memory is not None and not isinstance(memory, TeamMemory):
            raise UserError(
                f"memory must implement on_task_start, on_agent_message and on_task_end; got {type(memory).__name__}"
            )
        self.memory = memory
        if judge is not None and not callable(judge):
            raise UserError(
                f"judge must be a callable(task, output) -> bool or an LLMJudge, not {type(judge).__name__}"
            )
        self.judge = judge
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 50:
            raise UserError(f"k (memories recalled per namespace) must be an integer from 0 to 50, got {k!r}")
        self.k = k
        self.sampling: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
        self.graph: Any = None

    def agent_namespace(self, agent: str) -> Namespace:
        """The namespace an agent of this team remembers in."""
        return (*self.namespace, agent)

    def _llms(self, llm: LLM | Mapping[str, LLM] | None) -> dict[str, LLM]:
        if isinstance(llm, Mapping):
            unknown = sorted(set(llm) - set(self.role_prompts))
            if unknown:
                raise UserError(
                    f"llm names agents this team lacks: {', '.join(unknown)}; its agents are {self._names()}"
                )
            return {name: resolve_llm(self.session, llm.get(name), f"agent {name!r}") for name in self.role_prompts}
        one = resolve_llm(self.session, llm, f"team {self.team!r}")
        return dict.fromkeys(self.role_prompts, one)

    def _names(self) -> str:
        return ", ".join(self.role_prompts)

    # ---- one agent step ----------------------------------------------------------------------

    def _recalled(self, agent: str, task: str, written: Sequence[str]) -> tuple[list[str], list[str]]:
        """(own memories, team memories) for the task, leaving out what this task wrote itself."""
        if self.k == 0:
            return [], []
        skip = set(written)
        own = self.session.recall(self.agent_namespace(agent), task, k=self.k)
        shared = self.session.recall(self.namespace, task, k=self.k, labels={"scope": "team"})
        return (
            [h.cube.text for h in own if h.cube.id not in skip],
            [h.cube.text for h in shared if h.cube.id not in skip],
        )

    def _system(self, agent: str, intro: str, state: TeamState) -> str:
        own, shared = self._recalled(agent, state["task"], state.get("written", []))
        parts = [intro.strip()]
        insight = state.get("insights", {}).get(agent, "").strip()
        if insight:
            # a memory's text that brings its own headings (G-Memory's does) goes in as it is
            parts.append(insight if insight.startswith("#") else f"## Insights for your role\n{insight}")
        if own:
            parts.append("## Your memories\n" + "\n".join(f"- {text}" for text in own))
        if shared:
            parts.append("## Team memories\n" + "\n".join(f"- {text}" for text in shared))
        return "\n\n".join(parts)

    def _complete(
        self, agent: str, messages: list[Message], tallies: Mapping[str, Any]
    ) -> tuple[Completion, dict[str, int]]:
        """One model call of an agent, and the token tallies with it added."""
        completion = self.llms[agent].complete(messages, **self.sampling)
        usage = completion.usage
        counts = {
            "prompt_tokens": tallies.get("prompt_tokens", 0) + (usage.prompt_tokens if usage else 0),
            "completion_tokens": tallies.get("completion_tokens", 0) + (usage.completion_tokens if usage else 0),
            "calls": tallies.get("calls", 0) + 1,
        }
        return completion, counts

    def _work(
        self, agent: str, state: TeamState, inputs: Sequence[TeamMessage], *, last: bool = False
    ) -> dict[str, Any]:
        """Run one worker on the task with the given upstream outputs; record and remember its output.

        `last`: this is the task's final step, so the memory hears it as the one that ends the task.
        """
        intro = f"{self.role_prompts[agent]}\n\nYou are {agent}, a member of the team {self.team}."
        prompt = f"Task: {state['task']}"
        for message in inputs:
            prompt += f"\n\n## Output of {message.agent}\n{_clip(message.content, MAX_OUTPUT_CHARS)}"
        prompt += "\n\nDo your part of the task now."
        messages = [
            Message(role="system", content=self._system(agent, intro, state)),
            Message(role="user", content=prompt),
        ]
        completion, counts = self._complete(agent, messages, state)
        upstream = tuple(dict.fromkeys(m.agent for m in inputs))
        step = TeamMessage(agent, completion.text, upstream)
        written = [*state.get("written", []), *self._remember(agent, completion.text)]
        messages = [*state.get("messages", []), step.as_dict()]
        ending = _ending(messages, "") if last else None
        self._tell(agent, completion.text, upstream, ending, completion.text)
        return {"messages": messages, "written": written, **counts}

    def _tell(self, agent: str, message: str, upstream: Sequence[str], ending: str | None, output: str) -> None:
        """Tell the memory of one agent step; the task's last step also carries the route and the output.

        A task is one step of the memory's interaction graph: every message but the last leaves it
        open (so `upstream` may name any agent that spoke earlier in the task) and the last closes it.
        """
        if self.memory is None:
            return
        if ending is None:
            self.memory.on_agent_message(agent, message, role=agent, upstream=upstream)
        else:
            observation = _clip(output, MAX_OUTPUT_CHARS)
            self.memory.on_agent_message(
                agent, message, role=agent, upstream=upstream, action=ending, observation=observation
            )

    def _remember(self, agent: str, output: str) -> list[str]:
        """Write an output to the agent's namespace and its summary to the team's; the new cube ids."""
        if not output.strip():
            return []
        labels = {"team": self.team, "agent": agent}
        provenance = {"source": "message", "speaker": agent}
        own = self.session.write(
            self.agent_namespace(agent),
            _clip(output, MAX_OUTPUT_CHARS),
            level="long",
            labels={**labels, "scope": "agent", "entry": "output"},
            provenance=provenance,
        )
        summary = self.session.write(
            self.namespace,
            f"{agent}: {summarize(output)}",
            level="long",
            labels={**labels, "scope": "team", "entry": "summary"},
            provenance={**provenance, "derived_from": [own.id]},
        )
        return [own.id, summary.id]

    # ---- a task ------------------------------------------------------------------------------

    @abstractmethod
    def _recursion_limit(self) -> int:
        """Most LangGraph supersteps one task may take."""

    def _start_state(self, task: str, insights: dict[str, str]) -> TeamState:
        return {
            "task": task,
            "insights": insights,
            "messages": [],
            "written": [],
            "next": "",
            "rounds": 0,
            "stopped": "finished",
            "reason": "",
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "calls": 0,
        }

    def run(self, task: str) -> TeamResult:
        """Run the team on a task: memory hooks, the graph, the judge, and the team's result in memory."""
        if not isinstance(task, str) or not task.strip():
            raise UserError("the task is empty: give the team something to do")
        insights: dict[str, str] = {}
        if self.memory is not None:
            given = self.memory.on_task_start(task, list(self.roles))
            if not isinstance(given, Mapping) or not all(isinstance(v, str) for v in given.values()):
                raise UserError("memory.on_task_start must return a dict of role name -> prompt text")
            insights = {role: text for role, text in given.items() if role in self.roles}
        try:
            final = self.graph.invoke(self._start_state(task, insights), {"recursion_limit": self._recursion_limit()})
            messages = [TeamMessage.from_dict(m) for m in final["messages"]]
            output = next((m.content for m in reversed(messages) if m.action is None), "")
            stopped: Stopped = final["stopped"]
            tokens = TokenCount(final["prompt_tokens"], final["completion_tokens"], final["calls"])
            success = self._judge(task, output, stopped, tokens)
            self._remember_result(task, output, success, messages)
        except BaseException:
            # a model or store failure mid-task: the memory drops the task in flight, so the next run starts clean
            abandon = getattr(self.memory, "abandon", None)
            if callable(abandon):
                abandon()
            raise
        report: dict[str, Any] = {}
        if self.memory is not None:
            report = dict(self.memory.on_task_end(success) or {})
        reason = final["reason"] or f"{stopped} after {len(messages)} agent step(s)"
        result = TeamResult(output, messages, success, tokens, stopped, report, reason)
        self.session.mos.emit("memos_on_task_end", user=self.session.user, task=result, success=success)
        return result

    def _judge(self, task: str, output: str, stopped: Stopped, tokens: TokenCount) -> bool:
        """The judge's verdict (an LLMJudge's tokens added to the team's); without one: finished with output."""
        judge = self.judge
        if judge is None:
            return stopped == "finished" and bool(output.strip())
        spent = judge.tokens if isinstance(judge, LLMJudge) else None
        before = (spent.prompt, spent.completion, spent.calls) if spent is not None else (0, 0, 0)
        verdict = judge(task, output)
        if not isinstance(verdict, bool):
            raise UserError(f"the judge must return True or False, got {type(verdict).__name__}")
        if spent is not None:
            tokens.prompt += spent.prompt - before[0]
            tokens.completion += spent.completion - before[1]
            tokens.calls += spent.calls - before[2]
        return verdict

    def _remember_result(self, task: str, output: str, success: bool, messages: Sequence[TeamMessage]) -> None:
        """Write the task and its result to the team namespace."""
        if not output.strip():
            return
        self.session.write(
            self.namespace,
            f"Task: {_clip(task, 1000)}\nResult: {_clip(output, MAX_OUTPUT_CHARS)}",
            level="long",
            labels={"team": self.team, "scope": "team", "entry": "result", "success": str(success).lower()},
            provenance={"source": "message", "speaker": self.team},
        )


def parse_route(text: str, workers: Sequence[str]) -> str | None:
    """A supervisor's answer as a worker name or FINISH (case-insensitive, quotes and a final '.' allowed)."""
    answer = text.strip(" \t\r\n`*\"'.")
    for choice in (*workers, FINISH):
        if answer.lower() == choice.lower():
            return choice
    return None


class Supervisor(Team):
    """A supervisor LLM routes the task among workers until it answers FINISH or max_rounds worker turns."""

    DEFAULT_PROMPT = (
        "You are the supervisor of a team. Decide which worker should act next on the task, "
        "or answer FINISH when the work so far accomplishes it."
    )

    def __init__(
        self,
        session: Session,
        *,
        team: str,
        workers: Mapping[str, str],
        llm: LLM | Mapping[str, LLM] | None = None,
        memory: TeamMemory | None = None,
        judge: Judge | None = None,
        max_rounds: int = 6,
        supervisor_prompt: str | None = None,
        owner: str | None = None,
        k: int = 3,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> None:
        if not isinstance(workers, Mapping) or not workers:
            raise UserError("a supervisor team needs workers: a dict of worker name -> role prompt")
        for name, prompt in workers.items():
            check_segment(name, "worker name")
            if name.lower() in (SUPERVISOR, FINISH.lower()):
                raise UserError(f"a worker cannot be named {name!r}: that name is reserved; rename it")
            if not isinstance(prompt, str) or not prompt.strip():
                raise UserError(f"worker {name!r} needs a role prompt (a non-empty string)")
        if len({n.lower() for n in workers}) != len(workers):
            raise UserError("worker names must differ in more than letter case")
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or not 1 <= max_rounds <= MAX_ROUNDS_LIMIT:
            raise UserError(f"max_rounds must be an integer from 1 to {MAX_ROUNDS_LIMIT}, got {max_rounds!r}")
        self.workers = list(workers)
        self.max_rounds = max_rounds
        prompts = {SUPERVISOR: supervisor_prompt or self.DEFAULT_PROMPT, **workers}
        super().__init__(
            session,
            team=team,
            role_prompts=prompts,
            llm=llm,
            memory=memory,
            judge=judge,
            owner=owner,
            k=k,
            max_tokens=max_tokens,
            temperature=temperature,
        )
        self.roles = [SUPERVISOR, *self.workers]
        self.graph = self._build()

    def _build(self) -> Any:
        graph = load_langgraph()
        builder = graph.StateGraph(TeamState)
        builder.add_node(SUPERVISOR, self._route)
        routes = {name: name for name in self.workers}
        for name in self.workers:
            builder.add_node(name, self._worker(name))
            builder.add_edge(name, SUPERVISOR)
        builder.add_edge(graph.START, SUPERVISOR)
        builder.add_conditional_edges(SUPERVISOR, lambda state: state["next"], {**routes, _DONE: graph.END})
        return builder.compile()

    def _recursion_limit(self) -> int:
        return 2 * self.max_rounds + 4

    def _remember_result(self, task: str, output: str, success: bool, messages: Sequence[TeamMessage]) -> None:
        """The team's result, and the route taken in the supervisor's own namespace (for later routing)."""
        super()._remember_result(task, output, success, messages)
        route = [m.action for m in messages if m.action is not None]
        if route:
            self.session.write(
                self.agent_namespace(SUPERVISOR),
                f"Task: {_clip(task, 1000)}\nRoute: {' -> '.join(route)}\nSuccess: {str(success).lower()}",
                level="long",
                labels={"team": self.team, "agent": SUPERVISOR, "scope": "agent", "entry": "route"},
                provenance={"source": "message", "speaker": SUPERVISOR},
            )

    def _worker(self, name: str) -> Callable[[TeamState], dict[str, Any]]:
        def node(state: TeamState) -> dict[str, Any]:
            inputs = [m for m in map(TeamMessage.from_dict, state["messages"]) if m.action is None]
            return {**self._work(name, state, inputs), "rounds": state["rounds"] + 1}

        node.__name__ = f"worker_{name}"
        return node

    def _route(self, state: TeamState) -> dict[str, Any]:
        """Ask the supervisor for the next worker; retry once on an unreadable answer, then stop."""
        done = [m for m in map(TeamMessage.from_dict, state["messages"]) if m.action is None]
        team = "\n".join(f"- {name}: {leading_sentence(self.role_prompts[name])}" for name in self.workers)
        intro = f"{self.role_prompts[SUPERVISOR]}\n\nThe workers of the team {self.team}:\n{team}"
        work = "\n\n".join(f"[{m.agent}]\n{_clip(m.content, MAX_OUTPUT_CHARS)}" for m in done) or "(nothing yet)"
        choices = ", ".join(self.workers)
        ask = (
            f"Task: {state['task']}\n\n## Work so far\n{work}\n\n"
            f"Answer with exactly one word: the worker who acts next ({choices}) or {FINISH}."
        )
        messages = [
            Message(role="system", content=self._system(SUPERVISOR, intro, state)),
            Message(role="user", content=ask),
        ]
        counts: Mapping[str, Any] = state
        choice: str | None = None
        reply = ""
        for attempt in range(2):
            completion, counts = self._complete(SUPERVISOR, messages, counts)
            reply = completion.text
            choice = parse_route(reply, self.workers)
            if choice is not None or attempt == 1:
                break
            messages += [
                Message(role="assistant", content=reply),
                Message(
                    role="user",
                    content=f"{reply.strip()!r} is not one of {choices} or {FINISH}. "
                    "Answer with exactly one of them and nothing else.",
                ),
            ]
        update: dict[str, Any] = dict(counts)
        upstream = tuple(dict.fromkeys(m.agent for m in done))
        output = done[-1].content if done else ""
        if choice is None:
            reason = f"the supervisor answered {reply.strip()[:80]!r} twice instead of one of {choices} or {FINISH}"
            self._tell(SUPERVISOR, reply, upstream, _ending(state["messages"], "STOP (no valid route)"), output)
            return {**update, "next": _DONE, "stopped": "bad_route", "reason": reason}
        update["messages"] = [*state["messages"], TeamMessage(SUPERVISOR, reply, upstream, choice).as_dict()]
        if choice == FINISH:
            self._tell(SUPERVISOR, reply, upstream, _ending(state["messages"], FINISH), output)
            return {**update, "next": _DONE, "stopped": "finished"}
        if state["rounds"] >= self.max_rounds:
            reason = f"max_rounds: {self.max_rounds} worker turns done and the supervisor still asked for {choice}"
            self._tell(SUPERVISOR, reply, upstream, _ending(state["messages"], "STOP (max_rounds)"), output)
            return {**update, "next": _DONE, "stopped": "max_rounds", "reason": reason}
        self._tell(SUPERVISOR, reply, upstream, None, output)
        return {**update, "next": choice}


@hookimpl
def memos_register_agents(register: Register) -> None:
    """`supervisor-team` and `pipeline-team`: factory(session, team=..., ...) -> a team with `.run(task)`."""
    from .pipeline import Pipeline

    register("supervisor-team", Supervisor)
    register("pipeline-team", Pipeline)
