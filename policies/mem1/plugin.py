"""MEM1 as a plugin: registered as an agent ("mem1"), and run for a user by `Session.agent`.

MEM1 is an agent loop that keeps its memory in its own internal state; it does not decide, chunk by
chunk, what to write into the store, so it is not a `memos.policy.Policy` (an ingest policy) and is
registered with `memos_register_agents`: `factory(session, env=..., llm=None, ...) -> MEM1Agent`.
A finished episode may be kept as one cube labelled type=trajectory in a namespace the user names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from memos.cube import Level, MemCube, Namespace, Right, parse_namespace
from memos.errors import UserError
from memos.hooks import Register, hookimpl
from memos.llm.base import LLM
from memos.policies.mem1.env import Environment
from memos.policies.mem1.loop import DEFAULT_MAX_TURNS, ContextName, Episode, MEM1Agent

if TYPE_CHECKING:
    from memos.kernel import Session

NAME = "mem1"
#: labels of a stored MEM1 episode
TRAJECTORY_LABELS = {"type": "trajectory", "policy": NAME}


def make_agent(
    session: Session,
    *,
    env: Environment,
    llm: LLM | None = None,
    max_turns: int = DEFAULT_MAX_TURNS,
    format: str = "think",
    context: ContextName = "constant",
) -> MEM1Agent:
    """A MEM1 agent for a session: the given LLM or the kernel's, prompts counted with the kernel's tokenizer."""
    model = llm if llm is not None else session.mos.llm
    if model is None:
        raise UserError(
            "MEM1 needs an LLM: set MEMOS_LLM to hf:/path/to/model, vllm:http://HOST:PORT/v1#MODEL or "
            "openai:MODEL, or pass llm="
        )
    return MEM1Agent(model, env, format=format, max_turns=max_turns, context=context, tokenizer=session.mos.tokenizer)


def remember(session: Session, namespace: Namespace | Sequence[str] | str, episode: Episode) -> MemCube:
    """Write an episode's transcript as one long-term cube labelled type=trajectory, policy=mem1."""
    labels = {
        **TRAJECTORY_LABELS,
        "reward": f"{episode.reward:g}",
        "turns": str(len(episode.turns)),
        "stop": episode.stop,
    }
    text = episode.transcript()[: session.mos.settings.max_text_chars]
    return session.write(namespace, text, level=Level.long, labels=labels, provenance={"source": "policy"})


def run_episode(
    session: Session,
    *,
    env: Environment,
    llm: LLM | None = None,
    max_turns: int = DEFAULT_MAX_TURNS,
    format: str = "think",
    namespace: Namespace | Sequence[str] | str | None = None,
) -> Episode:
    """Run one MEM1 episode for the session's user; with a namespace, keep its transcript there."""
    if namespace is not None:
        # checked before the run, so a namespace the user cannot write to costs no model calls
        session.mos.governance.require(session.user, parse_namespace(namespace), Right.write)
    episode = make_agent(session, env=env, llm=llm, max_turns=max_turns, format=format).run()
    if namespace is not None:
        remember(session, namespace, episode)
    return episode


@hookimpl
def memos_register_agents(register: Register) -> None:
    """Register the MEM1 agent factory under "mem1"."""
    register(NAME, make_agent)
