"""Random write/update/forget/share sequences against the kernel and a plain dict model: they must agree."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from memos import ManualClock, MemOS, NotFound, PermissionDenied
from memos.cube import Status

USERS = ("alice", "bob", "carol")
NAMESPACES = (("alice", "chat"), ("alice", "work"), ("bob", "chat"))
WORDS = ("lisbon", "porto", "cello", "garden", "meeting", "cat", "train", "salary")
texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)


@dataclass
class ModelCube:
    """What the model knows about one cube."""

    ns: tuple[str, ...]
    versions: list[str]
    status: str = "active"


@dataclass
class Model:
    """The plain-dict model of a home."""

    cubes: dict[str, ModelCube] = field(default_factory=dict)
    #: (namespace, grantee) -> "read" | "write"
    grants: dict[tuple[tuple[str, ...], str], str] = field(default_factory=dict)

    def can(self, user: str, ns: tuple[str, ...], right: str) -> bool:
        if ns[0] == user:
            return True
        granted = self.grants.get((ns, user))
        return granted == "write" or (granted == right == "read")


class KernelVsModel(RuleBasedStateMachine):
    """Each rule acts on both; invariants compare them."""

    cube_ids = Bundle("cube_ids")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="memos-model-"))
        # the model knows the system calls, not paging: background paging would add cubes it cannot predict
        self.mos = MemOS.open(self.dir / "home", embedder="hash:32", clock=ManualClock(), auto_paging=False)
        self.sessions = {u: self.mos.as_user(u) for u in USERS}
        self.model = Model()

    def teardown(self) -> None:
        self.mos.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(target=cube_ids, user=st.sampled_from(USERS), ns=st.sampled_from(NAMESPACES), text=texts)
    def write(self, user: str, ns: tuple[str, ...], text: str) -> str:
        if not self.model.can(user, ns, "write"):
            try:
                self.sessions[user].write(ns, text)
            except PermissionDenied:
                return "01890a5d-ac96-774b-bcce-b302099a8057"  # an id that never exists
            raise AssertionError(f"{user} wrote to {ns} without the right")
        cube = self.sessions[user].write(ns, text)
        self.model.cubes[cube.id] = ModelCube(ns, [text])
        return cube.id

    @rule(cube_id=cube_ids, user=st.sampled_from(USERS), text=texts)
    def update(self, cube_id: str, user: str, text: str) -> None:
        known = self.model.cubes.get(cube_id)
        session = self.sessions[user]
        if known is None:
            self._expect(NotFound, lambda: session.update(cube_id, text))
        elif not self.model.can(user, known.ns, "write"):
            self._expect(PermissionDenied, lambda: session.update(cube_id, text))
        elif known.status == "deleted":
            from memos import Conflict

            self._expect(Conflict, lambda: session.update(cube_id, text))
        else:
            cube = session.update(cube_id, text)
            known.versions.append(text)
            assert cube.header.version == len(known.versions)

    @rule(cube_id=consumes(cube_ids), user=st.sampled_from(USERS))
    def hard_forget(self, cube_id: str, user: str) -> None:
        known = self.model.cubes.get(cube_id)
        session = self.sessions[user]
        if known is None:
            self._expect(NotFound, lambda: session.forget(cube_id, hard=True))
        elif not self.model.can(user, known.ns, "write"):
            self._expect(PermissionDenied, lambda: session.forget(cube_id, hard=True))
        else:
            session.forget(cube_id, hard=True)
            del self.model.cubes[cube_id]

    @rule(cube_id=cube_ids, user=st.sampled_from(USERS))
    def soft_forget(self, cube_id: str, user: str) -> None:
        known = self.model.cubes.get(cube_id)
        session = self.sessions[user]
        if known is None:
            self._expect(NotFound, lambda: session.forget(cube_id))
        elif not self.model.can(user, known.ns, "write"):
            self._expect(PermissionDenied, lambda: session.forget(cube_id))
        else:
            session.forget(cube_id)
            known.status = "deleted"

    @rule(ns=st.sampled_from(NAMESPACES), grantee=st.sampled_from(USERS), right=st.sampled_from(["read", "write"]))
    def share(self, ns: tuple[str, ...], grantee: str, right: str) -> None:
        if grantee == ns[0]:
            return
        self.sessions[ns[0]].share(ns, grantee, right)
        self.model.grants[(ns, grantee)] = right

    @rule(ns=st.sampled_from(NAMESPACES), grantee=st.sampled_from(USERS))
    def revoke(self, ns: tuple[str, ...], grantee: str) -> None:
        if (ns, grantee) in self.model.grants:
            self.sessions[ns[0]].revoke(ns, grantee)
            del self.model.grants[(ns, grantee)]
        elif grantee != ns[0]:
            self._expect(NotFound, lambda: self.sessions[ns[0]].revoke(ns, grantee))

    @rule(user=st.sampled_from(USERS), word=st.sampled_from(WORDS))
    def recall_sees_only_readable_active_cubes(self, user: str, word: str) -> None:
        readable = [ns for ns in NAMESPACES if self.model.can(user, ns, "read")]
        for ns in readable:
            hits = self.sessions[user].recall(ns, word, k=50)
            expected = {
                cid
                for cid, c in self.model.cubes.items()
                if c.ns == ns and c.status == "active" and word in c.versions[-1].split()
            }
            lexical_ids = {h.cube.id for h in hits if h.lexical is not None}
            assert lexical_ids == expected
            assert all(self.model.cubes[h.cube.id].status == "active" for h in hits)

    @invariant()
    def every_cube_agrees_with_the_model(self) -> None:
        for cube_id, known in self.model.cubes.items():
            owner = self.sessions[known.ns[0]]
            cube = owner.get(cube_id)
            assert cube.text == known.versions[-1]
            assert cube.status == Status(known.status)
            assert [c.text for c in owner.history(cube_id)] == known.versions
            for user in USERS:
                if not self.model.can(user, known.ns, "read"):
                    self._expect(PermissionDenied, lambda u=user, c=cube_id: self.sessions[u].get(c))

    @invariant()
    def vector_index_holds_exactly_the_active_cubes(self) -> None:
        active = {cid for cid, c in self.model.cubes.items() if c.status == "active"}
        assert self.mos.vectors.all_ids() == active

    @staticmethod
    def _expect(error: type[Exception], call: object) -> None:
        try:
            call()  # type: ignore[operator]
        except error:
            return
        raise AssertionError(f"expected {error.__name__}")


KernelVsModel.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_kernel_agrees_with_model = KernelVsModel.TestCase
