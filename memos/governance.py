"""Governance: users, namespace ownership, read/write grants, and the checks every system call makes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memos.clock import Clock
from memos.cube import MemCube, Namespace, Right, check_user_name, ns_path
from memos.errors import NotFound, PermissionDenied, UserError
from memos.log import get_logger
from memos.storage.catalog import Catalog

log = get_logger("governance")
#: the audit action of a refused attempt; its detail names what was attempted ("read", "write", "share", ...)
DENIED = "denied"


class CubeHidden(NotFound, PermissionDenied):
    """A cube the user may not even read: refused with the very message a missing id gets, so ids leak nothing."""


def _covers(grant_ns: str, ns: str) -> bool:
    return ns == grant_ns or ns.startswith(grant_ns + "/")


class Governance:
    """Who may read and write which namespace.

    A namespace belongs to the owner of its root segment: ("alice", "chat") to whoever owns "alice".
    A user owns the root named after them; any other root belongs to its first writer. Owners grant
    read or write on any namespace path (and so everything below it); write implies read.
    """

    def __init__(self, catalog: Catalog, clock: Clock) -> None:
        self.catalog = catalog
        self.clock = clock

    def ensure_user(self, name: str) -> str:
        """Register a user (and claim their root) if new; return the validated name."""
        check_user_name(name)
        if self.catalog.user_exists(name):
            return name
        now = self.clock.now()
        try:
            with self.catalog.tx() as conn:
                owner = self.catalog.root_owner(name, conn)
                if owner is not None and owner != name:
                    raise UserError(
                        f"cannot create user {name!r}: the namespace root {name!r} already belongs to {owner!r}; "
                        "pick another user name"
                    )
                self.catalog.add_user(conn, name, now)
                if owner is None:
                    self.catalog.claim_root(conn, name, name, now)
        except sa.exc.IntegrityError:
            # another process registered the same user at the same moment: that is fine
            if not self.catalog.user_exists(name):
                raise
        return name

    def require_user(self, name: str) -> str:
        """Raise NotFound unless the user is registered."""
        check_user_name(name)
        if not self.catalog.user_exists(name):
            raise NotFound(f"no user named {name!r}: create it with `memos users add {name}`", user=name)
        return name

    def rights(self, user: str, ns: Namespace, conn: Connection | None = None) -> set[Right]:
        """The rights a user holds on a namespace."""
        owner = self.catalog.root_owner(ns[0], conn)
        if owner is None or owner == user:
            # an unclaimed root is free: the first writer claims it inside the write's transaction
            return {Right.read, Right.write}
        path = ns_path(ns)
        held: set[Right] = set()
        for grant_ns, right in self.catalog.grants_for(user, conn):
            if _covers(grant_ns, path):
                held.add(Right(right))
                if right == Right.write:
                    held.add(Right.read)
        return held

    def deny(
        self,
        user: str,
        attempted: str,
        *,
        ns: str | None = None,
        cube_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Audit a refused attempt (action "denied"); writes nothing else and never raises.

        Without `conn` the entry is committed on its own, so it stays although the refused call fails.
        """
        entry = {"attempted": attempted, **dict(detail or {})}
        try:
            if conn is not None:
                self.catalog.audit(
                    conn, at=self.clock.now(), actor=user, action=DENIED, cube_id=cube_id, ns=ns, detail=entry
                )
                return
            with self.catalog.tx() as own:
                self.catalog.audit(
                    own, at=self.clock.now(), actor=user, action=DENIED, cube_id=cube_id, ns=ns, detail=entry
                )
        except Exception as exc:
            # the refusal itself must still reach the caller: a failing audit write is logged, not raised
            log.warning("a refused attempt could not be audited", user=user, attempted=attempted, error=str(exc))

    def require(
        self,
        user: str,
        ns: Namespace,
        right: Right,
        conn: Connection | None = None,
        *,
        action: str | None = None,
    ) -> None:
        """Raise PermissionDenied (audited as "denied") unless the user holds the right on the namespace."""
        if right not in self.rights(user, ns, conn):
            extra = {"call": action} if action else None
            self.deny(user, right.value, ns=ns_path(ns), detail=extra, conn=conn)
            raise PermissionDenied(
                f"{user} may not {right.value} {ns_path(ns)}: ask its owner to run "
                f"`memos share {ns_path(ns)} {user} --right {right.value}`",
                user=user,
                namespace=ns_path(ns),
                right=right.value,
            )

    def require_cube(self, user: str, cube: MemCube, right: Right, *, action: str | None = None) -> None:
        """Namespace rights, or the cube's own ACL, must allow the access; refusals are audited.

        A user who may not even read the cube gets CubeHidden, worded as for an id that does not exist
        ("no cube with id ..."), so guessing ids reveals nothing; one who may read it but not write it
        gets the usual PermissionDenied naming the namespace.
        """
        acl = cube.header.acl
        if user == acl.owner or user in acl.writers or (right == Right.read and user in acl.readers):
            return
        held = self.rights(user, cube.namespace)
        if right in held:
            return
        extra = {"call": action} if action else None
        if Right.read not in held and user not in acl.readers:
            self.deny(user, right.value, ns=ns_path(cube.namespace), cube_id=cube.id, detail=extra)
            raise CubeHidden(f"no cube with id {cube.id}", cube_id=cube.id)
        self.deny(user, right.value, ns=ns_path(cube.namespace), cube_id=cube.id, detail=extra)
        raise PermissionDenied(
            f"{user} may not {right.value} {ns_path(cube.namespace)}: ask its owner to run "
            f"`memos share {ns_path(cube.namespace)} {user} --right {right.value}`",
            user=user,
            namespace=ns_path(cube.namespace),
            right=right.value,
        )

    def claim(self, conn: Connection, user: str, ns: Namespace) -> str:
        """Inside a write's transaction: make sure the root has an owner and return it."""
        owner = self.catalog.root_owner(ns[0], conn)
        if owner is None:
            self.catalog.claim_root(conn, ns[0], user, self.clock.now())
            owner = user
        return owner

    def readable_prefixes(self, user: str, ns: Namespace, *, action: str | None = None) -> list[str]:
        """Namespace paths at or under `ns` the user may read; PermissionDenied when there are none."""
        if Right.read in self.rights(user, ns):
            return [ns_path(ns)]
        path = ns_path(ns)
        below = sorted({g for g, _ in self.catalog.grants_for(user) if g.startswith(path + "/")})
        if not below:
            self.require(user, ns, Right.read, action=action)
        return below

    def visible_prefixes(self, user: str) -> list[str]:
        """Every namespace path the user can read: owned roots plus grants."""
        owned = self.catalog.roots_owned_by(user)
        granted = [g for g, _ in self.catalog.grants_for(user)]
        out: list[str] = []
        for path in sorted(set(owned) | set(granted)):
            if not any(_covers(p, path) for p in out):
                out.append(path)
        return out

    def share(self, owner: str, ns: Namespace, grantee: str, right: Right) -> None:
        """Grant a right on a namespace; only the root's owner may."""
        self._require_owner(owner, ns, "share")
        self.require_user(grantee)
        if grantee == owner:
            raise UserError(f"{owner} already owns {ns_path(ns)}; share it with another user")
        now = self.clock.now()
        with self.catalog.tx() as conn:
            self.catalog.set_grant(conn, ns_path(ns), grantee, right.value, owner, now)
            self.catalog.audit(
                conn,
                at=now,
                actor=owner,
                action="share",
                ns=ns_path(ns),
                detail={"to": grantee, "right": right.value},
            )

    def revoke(self, owner: str, ns: Namespace, grantee: str) -> None:
        """Withdraw a user's grant on a namespace path."""
        self._require_owner(owner, ns, "revoke")
        now = self.clock.now()
        with self.catalog.tx() as conn:
            if self.catalog.delete_grant(conn, ns_path(ns), grantee) == 0:
                raise NotFound(f"{grantee} holds no grant on {ns_path(ns)}")
            self.catalog.audit(conn, at=now, actor=owner, action="revoke", ns=ns_path(ns), detail={"from": grantee})

    def _require_owner(self, user: str, ns: Namespace, attempted: str) -> None:
        owner = self.catalog.root_owner(ns[0])
        if owner is None:
            raise NotFound(f"namespace root {ns[0]!r} has no owner yet: write to it first")
        if owner != user:
            self.deny(user, attempted, ns=ns_path(ns))
            raise PermissionDenied(
                f"only {owner} (the owner of {ns[0]!r}) may share or revoke under it",
                user=user,
                namespace=ns_path(ns),
            )
