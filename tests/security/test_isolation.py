"""Isolation between users: mallory tries every entry point on alice's memories; each try is refused and audited.

Refusals of cube ids mallory may not even read are worded exactly as a missing id's ("no cube with id ..."),
and raise governance.CubeHidden (both NotFound and PermissionDenied), so guessed ids are no existence oracle.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import Cli

from memos import ManualClock, MemOS, NotFound, PermissionDenied, Session
from memos.governance import DENIED, CubeHidden
from memos.ids import new_id
from memos.llm.base import ToolCall
from memos.llm.testing import ScriptedLLM
from memos.registry import reset_registry
from memos.tools.memory import FORGET, INSERT, SEARCH, UPDATE, MemoryTools

CHAT = ("alice", "chat")
DIARY = ("alice", "diary")
SECRET = "alice's locker code is 4711"


class _NoTask:
    """An agent environment that must never be reached: a refused agent call stops before reset."""

    def reset(self) -> str:
        """Fail the test: the permission check should have refused first."""
        raise AssertionError("the agent ran in a namespace its user may not write")

    def step(self, action: Any) -> tuple[str, bool, dict[str, Any]]:
        """Never reached."""
        raise AssertionError("the agent ran in a namespace its user may not write")


@pytest.fixture
def llm() -> ScriptedLLM:
    """A model with no replies queued: any call that gets past a permission check fails loudly."""
    return ScriptedLLM()


@pytest.fixture
def mos(home: Path, clock: ManualClock, llm: ScriptedLLM) -> Iterator[MemOS]:
    """A toy home with the hashing embedder and a scripted LLM (so ask and agent reach their checks)."""
    m = MemOS.open(home, embedder="hash", clock=clock, llm=llm, auto_paging=False)
    yield m
    m.close()


@pytest.fixture
def alice(mos: MemOS) -> Session:
    """alice with memories in two namespaces (one soft-forgotten cube among them)."""
    session = mos.as_user("alice")
    session.write(CHAT, SECRET, tags=["private"])
    session.write(CHAT, "alice met bob at the locker room")
    gone = session.write(DIARY, "alice's diary: the locker code changes monthly")
    session.forget(gone.id)
    return session


@pytest.fixture
def mallory(mos: MemOS, alice: Session) -> Session:
    """The attacker, registered after alice, with a namespace of her own."""
    session = mos.as_user("mallory")
    session.write(("mallory", "notes"), "mallory's own note about lockers")
    return session


def _state(mos: MemOS) -> dict[str, Any]:
    """Everything a refusal must leave as it was: cubes with their versions, grants, users, vectors, audit."""
    alice = Session(mos, "alice")
    cubes = alice.list(("alice",), statuses=("active", "deleted", "archived", "expired"))
    return {
        "cubes": sorted((c.id, c.header.version, c.status.value, c.text, c.kind.value) for c in cubes),
        "histories": {c.id: [v.text for v in alice.history(c.id)] for c in cubes},
        "grants": alice.grants(("alice",)),
        "users": [name for name, _ in mos.users()],
        "vectors": mos.vectors.count(),
        "audit": [e for e in mos.catalog.audit_log(limit=10_000) if e["action"] != DENIED],
    }


def _denials(mos: MemOS) -> list[dict[str, Any]]:
    return [e for e in mos.catalog.audit_log(limit=10_000) if e["action"] == DENIED]


def _refused(mos: MemOS, attempt: Callable[[], object], error: type[Exception] = PermissionDenied) -> str:
    """Run an attempt that must be refused, audited once as mallory's, and change nothing else; return its message."""
    before, denied = _state(mos), len(_denials(mos))
    with pytest.raises(error) as caught:
        attempt()
    after = _denials(mos)
    assert len(after) == denied + 1, "a refusal must add exactly one audit entry"
    entry = after[0]
    assert entry["actor"] == "mallory"
    assert entry["ns"] is not None and entry["ns"].startswith("alice")
    assert entry["detail"]["attempted"] in ("read", "write", "share", "revoke")
    assert _state(mos) == before, "a refusal must write nothing but its audit entry"
    return str(caught.value)


def _ids(alice: Session) -> tuple[str, str]:
    chat = alice.list(CHAT)
    diary = alice.list(DIARY, statuses=("deleted",))
    return chat[0].id, diary[0].id


def test_every_session_call_on_alices_namespaces_is_refused_and_audited(
    mos: MemOS, alice: Session, mallory: Session, tmp_path: Path
) -> None:
    own_archive = tmp_path / "mallory.json"
    mallory.export(("mallory",), own_archive)
    stolen = tmp_path / "stolen.json"
    namespace_calls: list[Callable[[], object]] = [
        lambda: mallory.write(CHAT, "mallory was here"),
        lambda: mallory.write_many(DIARY, [{"text": "fake entry"}, {"text": "another"}]),
        lambda: mallory.recall(CHAT, "locker code"),
        lambda: mallory.recall(("alice",), "locker code"),
        lambda: mallory.context(CHAT, "locker code"),
        lambda: mallory.list(("alice",)),
        lambda: mallory.list(DIARY, statuses=("deleted",)),
        lambda: mallory.stats(("alice",)),
        lambda: mallory.grants(("alice",)),
        lambda: mallory.share(CHAT, "mallory"),
        lambda: mallory.share(("alice",), "mallory", "write"),
        lambda: mallory.revoke(CHAT, "mallory"),
        lambda: mallory.export(("alice",), stolen),
        lambda: mallory.import_(own_archive, into=CHAT),
        lambda: mallory.consolidate(CHAT, "activation"),
        lambda: mallory.ask(CHAT, "what is the locker code?"),
        lambda: mallory.agent(env=_NoTask(), llm=ScriptedLLM(), namespace=DIARY),
    ]
    for attempt in namespace_calls:
        _refused(mos, attempt)
    assert not stolen.exists()

    chat_id, forgotten_id = _ids(alice)
    cube_calls: list[Callable[[], object]] = [
        lambda: mallory.get(chat_id),
        lambda: mallory.history(chat_id),
        lambda: mallory.update(chat_id, "the code is 0000"),
        lambda: mallory.update(chat_id, tags=["mine"]),
        lambda: mallory.forget(chat_id),
        lambda: mallory.forget(chat_id, hard=True),
        lambda: mallory.restore(forgotten_id),
        lambda: mallory.get(forgotten_id),
        lambda: mallory.audit(chat_id),
        lambda: mallory.migrate([chat_id], "activation"),
    ]
    for attempt in cube_calls:
        message = _refused(mos, attempt, CubeHidden)
        assert message.startswith("no cube with id ")
    # mallory's own view never included alice's cubes
    assert all(c.namespace[0] == "mallory" for c in mallory.list(("mallory",)))
    assert {ns for ns, _ in mallory.stats().namespaces} == {"mallory/notes"}
    assert alice.get(chat_id).text == SECRET


def test_denials_are_visible_to_the_owner_with_actor_namespace_and_attempt(
    mos: MemOS, alice: Session, mallory: Session
) -> None:
    chat_id, _ = _ids(alice)
    with pytest.raises(PermissionDenied):
        mallory.write(CHAT, "x")
    with pytest.raises(NotFound):
        mallory.forget(chat_id, hard=True)
    with pytest.raises(PermissionDenied):
        mallory.share(DIARY, "mallory")
    seen = [
        (e["actor"], e["ns"], e["cube_id"], e["detail"]["attempted"]) for e in alice.audit() if e["action"] == DENIED
    ]
    assert seen == [
        ("mallory", "alice/diary", None, "share"),
        ("mallory", "alice/chat", chat_id, "write"),
        ("mallory", "alice/chat", None, "write"),
    ]


def test_guessed_ids_get_the_same_error_as_missing_ones(alice: Session, mallory: Session) -> None:
    chat_id, forgotten_id = _ids(alice)
    missing = new_id()
    calls: list[Callable[[Session, str], object]] = [
        lambda s, i: s.get(i),
        lambda s, i: s.history(i),
        lambda s, i: s.update(i, "x"),
        lambda s, i: s.forget(i),
        lambda s, i: s.forget(i, hard=True),
        lambda s, i: s.restore(i),
        lambda s, i: s.audit(i),
        lambda s, i: s.migrate([i], "parametric"),
    ]
    for call in calls:
        for existing in (chat_id, forgotten_id):
            with pytest.raises(NotFound) as hidden:
                call(mallory, existing)
            with pytest.raises(NotFound) as absent:
                call(mallory, missing)
            assert str(hidden.value).replace(existing, "ID") == str(absent.value).replace(missing, "ID")
            assert hidden.value.exit_code == absent.value.exit_code
            assert hidden.value.fields == {"cube_id": existing}
            assert absent.value.fields == {"cube_id": missing}


def test_read_grant_allows_reads_only_and_revoke_takes_them_back(
    mos: MemOS, alice: Session, mallory: Session, tmp_path: Path
) -> None:
    chat_id, _ = _ids(alice)
    alice.share(CHAT, "mallory", "read")

    assert mallory.get(chat_id).text == SECRET
    assert [c.text for c in mallory.history(chat_id)] == [SECRET]
    assert chat_id in {h.cube.id for h in mallory.recall(CHAT, "locker code")}
    # from the root, only the shared branch is searched: the diary stays hidden
    assert {h.cube.namespace for h in mallory.recall(("alice",), "locker", k=20)} == {CHAT}
    assert {c.id for c in mallory.list(CHAT)} == {c.id for c in alice.list(CHAT)}
    assert mallory.export(CHAT, tmp_path / "shared.json")["num_cubes"] == 2
    for attempt in (
        lambda: mallory.write(CHAT, "mallory was here"),
        lambda: mallory.update(chat_id, "the code is 0000"),
        lambda: mallory.forget(chat_id, hard=True),
        lambda: mallory.migrate([chat_id], "activation"),
        lambda: mallory.consolidate(CHAT, "activation"),
        lambda: mallory.share(CHAT, "bob"),
    ):
        message = _refused(mos, attempt)
        assert "mallory may not write alice/chat" in message or "only alice" in message
    with pytest.raises(PermissionDenied):
        mallory.get(alice.list(DIARY, statuses=("deleted",))[0].id)

    alice.revoke(CHAT, "mallory")
    for attempt in (lambda: mallory.get(chat_id), lambda: mallory.history(chat_id)):
        assert _refused(mos, attempt, CubeHidden) == f"no cube with id {chat_id}"
    _refused(mos, lambda: mallory.recall(CHAT, "locker code"))
    _refused(mos, lambda: mallory.list(CHAT))


def test_cli_refuses_mallory_everywhere(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "cli-home")
    cube_id = cli("add", "alice/chat", SECRET).stdout.strip()
    cli("add", "mallory/notes", "mallory's own note", user="mallory")
    missing = new_id()
    archive = tmp_path / "mine.json"
    cli("export", "mallory", str(archive), user="mallory")
    attempts: list[tuple[str, ...]] = [
        ("add", "alice/chat", "mallory was here"),
        ("search", "alice/chat", "locker"),
        ("search", "alice", "locker"),
        ("context", "locker", "--ns", "alice/chat"),
        ("stats", "alice"),
        ("grants", "alice"),
        ("share", "alice/chat", "mallory"),
        ("revoke", "alice/chat", "mallory"),
        ("export", "alice", str(tmp_path / "stolen.json")),
        ("import", str(archive), "--into", "alice/chat"),
        ("consolidate", "alice/chat", "--to", "activation"),
        ("show", cube_id),
        ("history", cube_id),
        ("update", cube_id, "the code is 0000"),
        ("forget", cube_id),
        ("forget", cube_id, "--hard"),
        ("restore", cube_id),
        ("audit", cube_id),
        ("migrate", cube_id, "--to", "activation"),
    ]
    for args in attempts:
        line = cli.user_error(*args, user="mallory")
        assert SECRET not in line
        if cube_id in args:
            assert line == f"error: no cube with id {cube_id}"
            # the same command on an id nobody holds reads the same
            other = tuple(missing if a == cube_id else a for a in args)
            assert cli.user_error(*other, user="mallory") == f"error: no cube with id {missing}"
    assert not (tmp_path / "stolen.json").exists()
    assert cli.json("show", cube_id)["content"] == SECRET  # type: ignore[index]
    denied = [e for e in cli.json("audit") if e["action"] == DENIED]  # type: ignore[union-attr]
    assert len(denied) == len(attempts)
    assert {e["actor"] for e in denied} == {"mallory"}
    # mallory's own audit view holds nothing of alice's cubes but her own refused attempts
    for entry in cli.json("audit", user="mallory"):  # type: ignore[union-attr]
        assert entry["actor"] == "mallory"


def test_langgraph_store_rooted_in_alices_namespace(mos: MemOS, alice: Session, mallory: Session) -> None:
    from memos.plugins.langgraph_store import MemosStore

    MemosStore(alice).put(("prefs",), "door", {"code": "4711"})
    before = _state(mos)
    for root in (("alice", "langgraph"), ("alice",), CHAT):
        store = MemosStore(mallory, root=root)
        for attempt in (
            lambda s=store: s.get(("prefs",), "door"),
            lambda s=store: s.search(("prefs",), query="code"),
            lambda s=store: s.search(()),
            lambda s=store: s.list_namespaces(),
            lambda s=store: s.put(("prefs",), "door", {"code": "0000"}),
            lambda s=store: s.delete(("prefs",), "door"),
        ):
            _refused(mos, attempt)
    assert _state(mos) == before
    alice.share(("alice", "langgraph"), "mallory", "read")
    shared = MemosStore(mallory, root=("alice", "langgraph"))
    assert shared.get(("prefs",), "door").value == {"code": "4711"}  # type: ignore[union-attr]
    _refused(mos, lambda: shared.put(("prefs",), "door", {"code": "0000"}))
    alice.revoke(("alice", "langgraph"), "mallory")
    _refused(mos, lambda: shared.get(("prefs",), "door"))


def _payload(result: Any) -> dict[str, Any]:
    value = json.loads(result.content)
    assert isinstance(value, dict)
    return value


HOSTILE = [
    "alice/chat",
    "alice",
    "/alice/chat/",
    "../alice/chat",
    "mallory/../alice/chat",
    "alice/chat/../../etc",
    "alice\x00chat",
    "alice%2Fchat",
    "*",
    "%",
    "alice/chat' OR '1'='1",
    "ALICE/CHAT",
]


def test_agent_tools_with_hostile_arguments(mos: MemOS, alice: Session, mallory: Session) -> None:
    chat_id, forgotten_id = _ids(alice)
    tools = MemoryTools(mallory, ("mallory", "notes"))
    before = _state(mos)
    calls = [
        ToolCall(id=f"s{i}", name=SEARCH, arguments={"query": "locker code", "namespace": ns})
        for i, ns in enumerate(HOSTILE)
    ]
    for target in (chat_id, forgotten_id, chat_id.upper(), f" {chat_id} ", f"alice/chat/{chat_id}", "../" + chat_id):
        calls.append(ToolCall(id="u", name=UPDATE, arguments={"id": target, "text": "the code is 0000"}))
        calls.append(ToolCall(id="f", name=FORGET, arguments={"id": target}))
    for call in calls:
        result = tools.run(call)
        assert not result.ok, call
        assert SECRET not in result.content and "4711" not in result.content
    assert _state(mos) == before
    # what mallory's own search finds is hers alone
    found = _payload(tools.run(ToolCall(id="s", name=SEARCH, arguments={"query": "locker"})))["results"]
    assert {r["namespace"] for r in found} == {"mallory/notes"}

    # tools bound straight to alice's namespaces: the kernel refuses, and audits, every call
    for ns in (CHAT, ("alice",)):
        bound = MemoryTools(mallory, ns)
        for call in (
            ToolCall(id="s", name=SEARCH, arguments={"query": "locker code"}),
            ToolCall(id="i", name=INSERT, arguments={"text": "mallory was here"}),
            ToolCall(id="u", name=UPDATE, arguments={"id": chat_id, "text": "the code is 0000"}),
            ToolCall(id="f", name=FORGET, arguments={"id": chat_id}),
        ):
            denied = len(_denials(mos))
            result = bound.run(call)
            assert not result.ok
            assert "4711" not in result.content
            assert len(_denials(mos)) == denied + 1
    assert _state(mos) == before


def test_tool_scope_refusals_are_audited(mos: MemOS, alice: Session, mallory: Session) -> None:
    chat_id, _ = _ids(alice)
    alice.share(CHAT, "mallory", "write")
    tools = MemoryTools(mallory, ("mallory", "notes"))
    denied = len(_denials(mos))
    result = tools.run(ToolCall(id="f", name=FORGET, arguments={"id": chat_id}))
    assert not result.ok and "outside the namespaces you may change" in _payload(result)["error"]
    result = tools.run(ToolCall(id="s", name=SEARCH, arguments={"query": "x", "namespace": "alice/chat"}))
    assert not result.ok and "is not one you may search" in _payload(result)["error"]
    entries = _denials(mos)[: len(_denials(mos)) - denied]
    assert [(e["actor"], e["ns"], e["detail"]) for e in entries] == [
        ("mallory", "alice/chat", {"attempted": "read", "by": "memory-tools"}),
        ("mallory", "alice/chat", {"attempted": "write", "by": "memory-tools"}),
    ]
    assert alice.get(chat_id).status.value == "active"


RECORDER = """
from memos.hooks import hookimpl

SEEN = []


@hookimpl
def memos_on_recall(user, query, hits):
    SEEN.append((user, query, [(h.cube.id, "/".join(h.cube.namespace)) for h in hits]))
"""


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A plugin (installed as a package would be) that records every memos_on_recall event."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "memos_test_recorder.py").write_text(RECORDER)
    info = site / "memos_test_recorder-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: memos-test-recorder\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[memos.plugins]\nrecorder = memos_test_recorder\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    reset_registry()
    module = importlib.import_module("memos_test_recorder")
    yield module
    reset_registry()
    sys.modules.pop("memos_test_recorder", None)


def test_recall_hook_sees_only_what_the_recaller_may_read(recorder: Any, alice: Session, mallory: Session) -> None:
    mallory.recall(("mallory",), "locker")
    with pytest.raises(PermissionDenied):
        mallory.recall(CHAT, "locker")
    alice.recall(("alice",), "locker")
    alice.share(CHAT, "mallory", "read")
    mallory.recall(("alice",), "locker")
    events = [(u, [ns for _, ns in hits]) for u, _, hits in recorder.SEEN]
    assert [u for u, _ in events] == ["mallory", "alice", "mallory"]
    assert set(events[0][1]) == {"mallory/notes"}
    assert "alice/chat" in events[1][1]
    assert set(events[2][1]) == {"alice/chat"}


def test_a_refused_attempt_is_not_shown_back_to_the_attacker(tmp_path: Path) -> None:
    """mallory's own audit view leaves out her refusals under alice's namespaces (no existence oracle)."""
    with MemOS.open(tmp_path / "home", embedder="hash") as mos:
        alice, mallory = mos.as_user("alice"), mos.as_user("mallory")
        cube = alice.write(("alice", "diary"), "A secret plan.")
        with pytest.raises(NotFound):
            mallory.get(cube.id)
        mallory.write(("mallory", "notes"), "My own note.")
        assert [e["action"] for e in mallory.audit()] == ["write"]
        refusals = [e for e in alice.audit() if e["action"] == "denied"]
        assert [(e["actor"], e["cube_id"]) for e in refusals] == [("mallory", cube.id)]
