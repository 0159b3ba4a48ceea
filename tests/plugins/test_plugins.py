"""The plugin registry with real installed packages: the example plugin (pip-installed), broken and rival ones."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from memos import ManualClock, MemOS
from memos.config import Settings
from memos.cube import Namespace
from memos.embed import make_embedder
from memos.errors import BackendError, UserError
from memos.ingest import PolicySummary, ingest_with_policy, iter_observations
from memos.kernel import Session
from memos.policy import MemoryOp, Observation, OpKind, Policy
from memos.registry import NameConflict, PluginStatus, Registry, get_registry

#: the make_plugin fixture: (dist name, entry-point name, module source) -> the site folder
MakePlugin = Callable[[str, str, str], Path]
EXAMPLE_NAMES = {"policies": ["keep-questions"], "embedders": ["charfreq"], "cli_commands": ["example-hello"]}


def loaded(registry: Registry) -> dict[str, tuple[str, str, str | None, dict[str, list[str]]]]:
    """The plugins that were not disabled: name -> (source, status, error, what they registered)."""
    return {
        info.name: (info.source, info.status.value, info.error, info.names())
        for info in registry.plugins
        if info.status != PluginStatus.disabled
    }


def conversation(tmp_path: Path) -> Path:
    """One session of four turns, two of them questions."""
    path = tmp_path / "chat.json"
    turns = [
        ("Maya", "I adopted a greyhound called Biscuit.", "t1"),
        ("Ravi", "What breed is Biscuit?", "t2"),
        ("Maya", "A retired racer from Leeds.", "t3"),
        ("Ravi", "Does she like the park?", "t4"),
    ]
    session = {"id": "s1", "date": "2023-05-08T13:56:00", "turns": []}
    session["turns"] = [{"speaker": s, "text": t, "id": i} for s, t, i in turns]
    path.write_text(json.dumps({"sessions": [session]}))
    return path


def test_the_registry_loads_plugins_only_when_asked(with_example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_PLUGINS", "heuristic,example")
    registry = get_registry()
    assert "memos_plugin_example.plugin" not in sys.modules

    assert loaded(registry) == {
        "heuristic": ("memos 0.1.0", "loaded", None, {"policies": ["heuristic"]}),
        "example": ("memos-plugin-example 0.1.0", "loaded", None, EXAMPLE_NAMES),
    }
    from memos_plugin_example.embedder import make_charfreq
    from memos_plugin_example.policy import KeepQuestionsPolicy

    from memos.policies.heuristic import HeuristicPolicy

    assert dict(registry.policies) == {"heuristic": HeuristicPolicy, "keep-questions": KeepQuestionsPolicy}
    assert dict(registry.embedders) == {"charfreq": make_charfreq}
    assert sorted(registry.cli_commands) == ["example-hello"]
    assert (registry.llm_backends, registry.vector_stores, registry.agents, registry.tools) == ({}, {}, {}, {})
    assert registry.conflicts == []
    item = registry.registration("policies", "keep-questions")
    assert (item.kind, item.name, item.plugin) == ("policies", "keep-questions", "example")
    assert get_registry() is registry


def test_loading_every_builtin_plugin_imports_no_langgraph() -> None:
    """The first kernel event loads every plugin: LangGraph (about a second to import) waits until an agent is built."""
    code = (
        "import sys; from memos.registry import Registry; r = Registry(); "
        "assert {'memory-agent', 'langgraph-store', 'supervisor-team'} <= set(r.agents), sorted(r.agents); "
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('langgraph', 'langchain'))}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_example_policy_stores_only_the_questions(with_example: Path, mos: MemOS, tmp_path: Path) -> None:
    session = mos.as_user("alice")
    observations = [obs for _, obs in iter_observations(conversation(tmp_path))]
    assert observations[1] == Observation(
        text="Ravi: What breed is Biscuit?",
        index=1,
        speaker="Ravi",
        metadata={"session_id": "s1", "turn_id": "t2", "external_id": "t2", "date": "2023-05-08T13:56:00+00:00"},
    )

    policy = get_registry().policy("keep-questions")
    summary = ingest_with_policy(session, "alice/chat", observations, policy)

    assert summary == PolicySummary(
        policy="keep-questions", num_chunks=4, num_ops=2, num_applied=2, num_failed=0, applied_by_kind={"insert": 2}
    )
    cubes = sorted(session.list("alice/chat"), key=lambda cube: cube.header.provenance.external_id or "")
    assert [(c.text, c.level.value, c.header.labels) for c in cubes] == [
        ("Ravi: What breed is Biscuit?", "long", {"type": "question"}),
        ("Ravi: Does she like the park?", "long", {"type": "question"}),
    ]
    provenance = cubes[0].header.provenance
    assert (provenance.source.value, provenance.actor, provenance.session_id, provenance.speaker) == (
        "policy",
        "alice",
        "s1",
        "Ravi",
    )
    for cube in cubes:
        entries = session.audit(cube.id)
        assert [(e["actor"], e["action"], e["ns"]) for e in entries] == [("alice", "write", "alice/chat")]


def test_the_example_embedder_serves_a_home(with_example: Path, home: Path, clock: ManualClock, tmp_path: Path) -> None:
    with MemOS.open(home, embedder="charfreq:16", clock=clock, auto_paging=False) as mos:
        assert (mos.embedder.id, mos.embedder.dim) == ("charfreq-v1-16", 16)
        # 'a', 'b', 'c' are code points 97, 98, 99: buckets 1, 2, 3 of 16
        expected = np.zeros(16, dtype=np.float32)
        expected[[1, 2, 3]] = np.array([2, 1, 1]) / np.sqrt(6)
        np.testing.assert_allclose(mos.embedder.embed(["a b c a!"])[0], expected, rtol=1e-6)

        session = mos.as_user("alice")
        session.write("alice/notes", "zzz yyy")
        wanted = session.write("alice/notes", "cab cab")
        hits = session.recall("alice/notes", "abc", 2)
        assert hits[0].cube.id == wanted.id
        assert hits[0].dense == pytest.approx(1.0)

    with pytest.raises(UserError) as caught:
        MemOS.open(tmp_path / "other-home", embedder="charfreq:many")
    assert caught.value.message == "bad embedder 'charfreq:many': the dimension must be an integer, e.g. charfreq:64"


def test_memos_plugins_limits_what_loads(with_example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_PLUGINS", "heuristic")
    registry = get_registry()

    assert loaded(registry) == {"heuristic": ("memos 0.1.0", "loaded", None, {"policies": ["heuristic"]})}
    example = next(info for info in registry.plugins if info.name == "example")
    assert (example.source, example.status, example.registered) == ("memos-plugin-example 0.1.0", "disabled", [])
    assert "memos_plugin_example.plugin" not in sys.modules
    with pytest.raises(UserError) as caught:
        make_embedder(Settings(embedder="charfreq:16"))
    assert caught.value.message == "unknown embedder 'charfreq:16': use 'minilm', 'hash', 'hash:DIM' or 'openai:MODEL'"


def test_memos_plugins_none_loads_nothing(with_example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_PLUGINS", "none")
    registry = get_registry()

    assert loaded(registry) == {}
    assert {info.status for info in registry.plugins} == {PluginStatus.disabled}
    with pytest.raises(UserError) as caught:
        registry.policy("heuristic")
    assert caught.value.message == (
        "unknown policy 'heuristic': available policies are none (no plugin registers one); "
        "`memos plugins list` shows the plugins"
    )


def test_an_unknown_name_in_memos_plugins_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_PLUGINS", "heuristic, nowhere")

    assert loaded(get_registry()) == {
        "heuristic": ("memos 0.1.0", "loaded", None, {"policies": ["heuristic"]}),
        "nowhere": (
            "-",
            "failed",
            "MEMOS_PLUGINS names it, but no installed package has a memos.plugins entry point of that name",
            {},
        ),
    }


BROKEN_ON_IMPORT = "raise RuntimeError('boom: the plugin is broken')\n"

BROKEN_IN_HOOK = """
from memos.hooks import hookimpl

@hookimpl
def memos_register_policies(register):
    register("half-registered", object)

@hookimpl
def memos_register_embedders(register):
    raise ValueError("no embedder today")
"""

MISSPELT_HOOK = """
from memos.hooks import hookimpl

@hookimpl
def memos_register_policy(register):
    register("never", object)
"""


def test_broken_plugins_are_reported_and_skipped(
    with_example: Path, make_plugin: MakePlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugin("memos-broken", "broken", BROKEN_ON_IMPORT)
    make_plugin("memos-half", "half", BROKEN_IN_HOOK)
    make_plugin("memos-typo", "typo", MISSPELT_HOOK)
    monkeypatch.setenv("MEMOS_PLUGINS", "heuristic,example,broken,half,typo")
    registry = get_registry()

    assert loaded(registry) == {
        "heuristic": ("memos 0.1.0", "loaded", None, {"policies": ["heuristic"]}),
        "broken": (
            "memos-broken 0.1.0",
            "failed",
            "importing memos_test_broken: RuntimeError: boom: the plugin is broken",
            {},
        ),
        "half": (
            "memos-half 0.1.0",
            "failed",
            "in memos_register_embedders: ValueError: no embedder today",
            {},
        ),
        "example": ("memos-plugin-example 0.1.0", "loaded", None, EXAMPLE_NAMES),
        "typo": (
            "memos-typo 0.1.0",
            "failed",
            "implements memos_register_policy, which memos does not define",
            {},
        ),
    }
    # what a failed plugin registered before it failed is dropped with it
    assert sorted(registry.policies) == ["heuristic", "keep-questions"]


RIVAL = """
from memos.hooks import hookimpl

from memos.policies.heuristic import HeuristicPolicy

#: the writes this plugin observed
CALLS = []


@hookimpl
def memos_register_policies(register):
    register("keep-questions", HeuristicPolicy)
    register("rival", HeuristicPolicy)


@hookimpl
def memos_register_embedders(register):
    register("hash", object)


@hookimpl
def memos_register_tools(register):
    register("shout", str.upper)


@hookimpl
def memos_on_write(user, cubes):
    CALLS.append((user, list(cubes)))
"""


def test_a_name_registered_twice_keeps_the_first_and_reports_the_conflict(
    with_example: Path, make_plugin: MakePlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugin("memos-rival", "rival", RIVAL)
    monkeypatch.setenv("MEMOS_PLUGINS", "heuristic,example,rival")
    registry = get_registry()

    assert loaded(registry)["rival"] == (
        "memos-rival 0.1.0",
        "loaded",
        None,
        {"policies": ["rival"], "tools": ["shout"]},
    )
    assert registry.conflicts == [
        NameConflict("policies", "keep-questions", kept="example", ignored="rival"),
        NameConflict("embedders", "hash", kept="memos", ignored="rival"),
    ]
    assert type(registry.policy("keep-questions")).__name__ == "KeepQuestionsPolicy"
    assert registry.policy("rival").name == "heuristic"
    assert registry.tools["shout"]("hi") == "HI"
    # event hooks reach the plugins that loaded
    registry.hook.memos_on_write(user="alice", cubes=("cube-1",))
    assert sys.modules["memos_test_rival"].CALLS == [("alice", ["cube-1"])]


NOT_A_POLICY = """
from memos.hooks import hookimpl

@hookimpl
def memos_register_policies(register):
    register("not-a-policy", dict)
    register("explodes", lambda: 1 / 0)
"""


def test_a_policy_factory_that_misbehaves_is_the_plugins_fault(
    make_plugin: MakePlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugin("memos-odd", "odd", NOT_A_POLICY)
    monkeypatch.setenv("MEMOS_PLUGINS", "odd")
    registry = get_registry()

    with pytest.raises(BackendError) as caught:
        registry.policy("not-a-policy")
    assert caught.value.message == (
        "plugin 'odd' registered policy 'not-a-policy' as a factory of dict, not of a memos.policy.Policy"
    )
    with pytest.raises(BackendError) as caught:
        registry.policy("explodes")
    assert caught.value.message == "plugin 'odd' failed to build 'explodes': ZeroDivisionError: division by zero"


class DeletesWhatItCannot(Policy):
    """Asks, for every chunk, to delete a cube that does not exist."""

    name = "deletes"

    def observe(self, session: Session, namespace: Namespace, observation: Observation) -> list[MemoryOp]:
        """A delete of a missing cube and an insert without text."""
        return [MemoryOp(OpKind.delete, cube_id="01890a5d-ac96-774b-bcce-b302099a8057"), MemoryOp(OpKind.insert)]


def test_failed_operations_are_counted_not_raised(mos: MemOS) -> None:
    observations = [Observation("one"), Observation("two", 1)]

    summary = ingest_with_policy(mos.as_user("alice"), "alice/chat", observations, DeletesWhatItCannot())

    assert (summary.num_chunks, summary.num_ops, summary.num_applied, summary.num_failed) == (2, 4, 0, 4)
    missing = "no cube with id 01890a5d-ac96-774b-bcce-b302099a8057"
    empty = "an insert operation needs a non-empty text"
    assert summary.errors == [f"chunk 0: {missing}", f"chunk 0: {empty}", f"chunk 1: {missing}", f"chunk 1: {empty}"]


def test_the_kernel_tells_plugins_of_writes_and_recalls_and_survives_their_errors(
    make_plugin: Callable[[str, str, str], Path], mos: MemOS, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugin(
        "memos-test-events",
        "events",
        "from memos.hooks import hookimpl\n"
        "SEEN = []\n"
        "@hookimpl\n"
        "def memos_on_write(user, cubes):\n"
        "    SEEN.append(('write', user, [c.text for c in cubes]))\n"
        "@hookimpl\n"
        "def memos_on_recall(user, query, hits):\n"
        "    raise RuntimeError('this plugin breaks on recall')\n",
    )
    monkeypatch.setenv("MEMOS_PLUGINS", "events")
    alice = mos.as_user("alice")
    alice.write("alice/chat", "Maya adopted a greyhound called Biscuit.")
    hits = alice.recall("alice/chat", "greyhound", k=1)

    import memos_test_events  # the module the registry loaded

    assert memos_test_events.SEEN == [("write", "alice", ["Maya adopted a greyhound called Biscuit."])]
    # the plugin raised on recall: the recall still answered
    assert [h.cube.text for h in hits] == ["Maya adopted a greyhound called Biscuit."]
