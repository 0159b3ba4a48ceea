"""memos as LangGraph's long-term store: `MemosStore(session)` keeps each item as a cube (plugin `langgraph-store`).

    store = MemosStore(MemOS.open("./home").as_user("alice"))
    graph = builder.compile(store=store)  # nodes use it as runtime.store or get_store()

Operations behave as InMemoryStore's: in a batch, reads see the state from before its puts, and puts
to one (namespace, key) collapse to the last; a search without a query lists namespace by namespace
(in the order they came to hold items), each in the order its items were first put. As in LangGraph's
SQL stores, a namespace exists while it holds items and an update keeps created_at.

The namespace ("users", "123") is the memos namespace root + ("users", "123"), root (user, "langgraph")
unless given. A label of at most 64 letters, digits, '_', '@', '-' starting with a letter or digit is
kept; any other is stored as "u." + its UTF-8 in base32 (at most 38 bytes), which no kept label can
be, as LangGraph labels never hold '.'. Puts into a namespace that cannot be stored (a label too long,
too deep under the root) raise StoreNamespaceError; reads of one find nothing. Keys are at most 256
characters; values must be JSON.

An item is one long-term plaintext cube tagged "langgraph": content = the text to index (the index
config's fields, the put's `index` fields, the whole value as JSON by default; an unindexed item,
index=False or no text there, holds its JSON but is never ranked), provenance external id = the key,
labels = key, value JSON in 256-character pieces (lg.value.0, ...), indexed or not, TTL, namespace
order mark. Puts of existing keys are Session.update (a version), deletes Session.forget (hard with
hard_delete), so ACL, versions and audit apply. A query search ranks indexed items with Session.recall
under the prefix (score: the fused score; among recall's 1000 best cubes at most), keeps the hits the
filter passes and, as InMemoryStore does, fills the page with unindexed items, unscored. memos always
has an embedder, so every store answers queries; `index` only picks the fields.

TTL (minutes) is the cube's expires_at; expired items are never returned; reads with refresh_ttl push
it a TTL past now (an update). A batch is checked whole before anything is written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from memos.cube import MAX_NAMESPACE_DEPTH, Kind, Level, MemCube, Namespace, Right, parse_namespace
from memos.errors import PermissionDenied, UserError
from memos.ids import new_id
from memos.kernel import Session, WriteRequest
from memos.log import get_logger
from memos.storage.catalog import CubeFilter

from .langgraph_match import (
    MAX_ENCODED_BYTES,
    StoreNamespaceError,
    check_filter,
    check_labels,
    decode_segment,
    does_match,
    encode_label,
    matches,
)

try:
    from langgraph.store.base import (
        BaseStore,
        GetOp,
        IndexConfig,
        Item,
        ListNamespacesOp,
        Op,
        PutOp,
        Result,
        SearchItem,
        SearchOp,
        TTLConfig,
        get_text_at_path,
        tokenize_path,
    )
except ImportError as exc:  # pragma: no cover - only without the agents extra
    raise UserError("the LangGraph store needs langgraph: pip install 'memos[agents]'") from exc

log = get_logger("langgraph_store")
#: the tag on every item's cube
TAG = "langgraph"
ITEM, KEY, ORDER, INDEXED, TTL, UPDATED = "lg.item", "lg.key", "lg.order", "lg.indexed", "lg.ttl", "lg.updated"
#: labels lg.value.0, lg.value.1, ... hold the value's JSON in pieces of this many characters
VALUE, PIECE = "lg.value.", 256
MAX_KEY_CHARS = 256
#: expires_at that stands for "no expiry" once an item's TTL was removed (Session.update cannot clear one)
NEVER = datetime(9999, 12, 31, tzinfo=UTC)
#: most cubes one query search asks recall for (the kernel's limit on k)
MAX_RECALL = 1000
# ---- items -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """One live item as its cube holds it."""

    cube: MemCube
    namespace: tuple[str, ...]
    key: str
    order: str
    indexed: bool
    ttl: float | None
    value: dict[str, Any]

    def item(self, *, search: bool = False, score: float | None = None) -> Item:
        """The LangGraph Item (or SearchItem) this cube stands for."""
        header = self.cube.header
        updated = datetime.fromisoformat(header.labels[UPDATED]) if UPDATED in header.labels else header.created_at
        common = {"namespace": self.namespace, "key": self.key, "value": self.value, "created_at": header.created_at}
        return SearchItem(**common, updated_at=updated, score=score) if search else Item(**common, updated_at=updated)


@dataclass
class _Put:
    """A checked put: where it goes, and the cube text and labels it will write (no labels: a delete)."""

    op: PutOp
    ns: Namespace
    content: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def _decode(cube: MemCube, root: Namespace) -> Stored | None:
    """The item a cube holds, or None when it is not one of this store's items."""
    labels = cube.header.labels
    if cube.namespace[: len(root)] != root or labels.get(ITEM) != "1" or KEY not in labels:
        return None
    decoded = [decode_segment(s) for s in cube.namespace[len(root) :]]
    namespace = tuple(label for label in decoded if label is not None)
    pieces = sorted(
        (int(k[len(VALUE) :]), v) for k, v in labels.items() if k.startswith(VALUE) and k[len(VALUE) :].isdigit()
    )
    try:
        value = json.loads("".join(v for _, v in pieces))
    except ValueError:
        return None
    if not namespace or len(namespace) != len(decoded) or not isinstance(value, dict):
        return None
    ttl = float(labels[TTL]) if TTL in labels else None
    return Stored(cube, namespace, labels[KEY], labels.get(ORDER, ""), labels.get(INDEXED) == "1", ttl, value)


# ---- the store ---------------------------------------------------------------------------------


class MemosStore(BaseStore):
    """LangGraph's BaseStore over a memos Session: items are cubes under `root`, searched by the kernel's recall."""

    supports_ttl: bool = True

    def __init__(
        self,
        session: Session,
        *,
        root: Namespace | Sequence[str] | str | None = None,
        index: IndexConfig | Mapping[str, Any] | None = None,
        ttl: TTLConfig | Mapping[str, Any] | None = None,
        hard_delete: bool = False,
    ) -> None:
        if not isinstance(session, Session):
            raise UserError(f"MemosStore needs a memos Session (mos.as_user(NAME)), not {type(session).__name__}")
        self.session = session
        self.root: Namespace = parse_namespace(root if root is not None else (session.user, "langgraph"))
        if len(self.root) >= MAX_NAMESPACE_DEPTH:
            raise UserError(f"the store's root may have at most {MAX_NAMESPACE_DEPTH - 1} segments, to leave room")
        self.index_config: IndexConfig = self._index_config(index)
        self._fields = [(p, tokenize_path(p) if p != "$" else p) for p in self.index_config["fields"] or ["$"]]
        self.ttl_config: TTLConfig | None = self._ttl_config(ttl)
        self.hard_delete = bool(hard_delete)
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    def _index_config(self, index: Any) -> IndexConfig:
        dim = self.session.mos.embedder.dim
        if index is None:
            return {"dims": dim, "fields": ["$"]}
        if not isinstance(index, Mapping):
            raise UserError(f"index is a mapping like {{'fields': ['text']}}, not {type(index).__name__}")
        if unknown := sorted(set(index) - {"dims", "embed", "fields"}):
            raise UserError(f"unknown index setting {unknown[0]!r}: MemosStore takes 'fields' (and 'dims')")
        if index.get("embed") is not None:
            raise UserError("MemosStore embeds with the home's embedder (MemOS.open(embedder=...)): drop 'embed'")
        if index.get("dims") not in (None, dim):
            raise UserError(f"index dims {index['dims']!r} differ from the home's embedder ({dim}): drop 'dims'")
        fields = index.get("fields") or ["$"]
        if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
            raise UserError("index fields are a list of paths like ['text', 'meta.title', 'notes[*]']")
        return {"dims": dim, "fields": list(fields)}

    @staticmethod
    def _ttl_config(ttl: Any) -> TTLConfig | None:
        if ttl is None:
            return None
        if not isinstance(ttl, Mapping):
            raise UserError(f"ttl is a mapping like {{'default_ttl': 60}}, not {type(ttl).__name__}")
        known = {"refresh_on_read", "default_ttl", "sweep_interval_minutes", "omit_expired"}
        if unknown := sorted(set(ttl) - known):
            raise UserError(f"unknown ttl setting {unknown[0]!r}: use {', '.join(sorted(known))}")
        _check_minutes(ttl.get("default_ttl"), "default_ttl")
        _check_minutes(ttl.get("sweep_interval_minutes"), "sweep_interval_minutes")
        if not isinstance(ttl.get("refresh_on_read", True), bool):
            raise UserError("ttl refresh_on_read must be True or False")
        if ttl.get("omit_expired", True) is not True:
            raise UserError("memos never returns expired items: drop omit_expired or set it to True")
        return TTLConfig(**ttl)  # type: ignore[typeddict-item]

    # ---- batches -------------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run gets, searches, namespace listings and puts; results in input order, reads before the puts."""
        todo = list(ops)
        puts = self._check_ops(todo)
        for ns in dict.fromkeys(put.ns for put in puts.values()):
            self.session.mos.governance.require(self.session.user, ns, Right.write)
        now = self.session.mos.clock.now()
        cache: dict[Namespace, list[Stored]] = {}
        refresh: dict[str, Stored] = {}
        results: list[Result] = []
        for op in todo:
            if isinstance(op, GetOp):
                results.append(self._get(op, now, refresh))
            elif isinstance(op, SearchOp):
                results.append(self._search(op, now, cache, refresh))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op, now, cache))
            else:
                results.append(None)
        self._refresh(refresh.values())
        self._apply(puts, now)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """`batch` in a worker thread, so the event loop is not blocked."""
        return await asyncio.to_thread(self.batch, list(ops))

    def _check_ops(self, ops: Sequence[Any]) -> dict[tuple[tuple[str, ...], str], _Put]:
        """Check every op before anything runs; return the puts, one per (namespace, key), the last winning."""
        puts: dict[tuple[tuple[str, ...], str], _Put] = {}
        for op in ops:
            if isinstance(op, GetOp):
                check_labels(op.namespace)
                _check_key(op.key, put=False)
            elif isinstance(op, SearchOp):
                check_labels(op.namespace_prefix, "namespace prefix")
                check_filter(op.filter)
                _check_count(op, "limit", "offset")
                if op.query is not None and not isinstance(op.query, str):
                    raise UserError(f"a search query is a string, not {type(op.query).__name__}")
            elif isinstance(op, ListNamespacesOp):
                for condition in op.match_conditions or ():
                    if condition.match_type not in ("prefix", "suffix"):
                        raise UserError(f"unknown match type {condition.match_type!r}: use 'prefix' or 'suffix'")
                    check_labels(condition.path, "namespace pattern")
                _check_count(op, "limit", "offset", *(["max_depth"] if op.max_depth is not None else []))
            elif isinstance(op, PutOp):
                checked = self._check_put(op)
                puts[(checked.op.namespace, checked.op.key)] = checked
            else:
                raise UserError(
                    f"unknown store operation {type(op).__name__}: use GetOp, SearchOp, PutOp or ListNamespacesOp"
                )
        return puts

    def _check_put(self, op: PutOp) -> _Put:
        namespace = check_labels(op.namespace)
        _check_key(op.key)
        if not namespace:
            raise StoreNamespaceError("a namespace cannot be empty: give at least one label, e.g. ('memories',)")
        if namespace[0] == "langgraph":
            raise StoreNamespaceError(f"the root label of {namespace} cannot be 'langgraph' (LangGraph reserves it)")
        ns = self._memos_namespace(namespace, strict=True)
        assert ns is not None  # strict raises instead
        op = op._replace(namespace=namespace)
        if op.value is None:
            return _Put(op=op, ns=ns)
        if not isinstance(op.value, Mapping):
            raise UserError(f"the value of {op.key!r} must be a mapping (a dict), not {type(op.value).__name__}")
        if op.index not in (False, None) and (
            not isinstance(op.index, list) or not all(isinstance(p, str) for p in op.index)
        ):
            raise UserError("index is False, None or a list of field paths like ['text', 'notes[*]']")
        if op.ttl is not None:
            _check_minutes(op.ttl, "ttl")
        try:
            raw = json.dumps(dict(op.value), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UserError(f"the value of {op.key!r} in {namespace} is not JSON ({exc}): store JSON data") from None
        text = self._index_text(json.loads(raw), raw, op.index)
        limit = self.session.mos.settings.max_text_chars
        if len(text) > limit:
            raise UserError(
                f"the text to index of {op.key!r} in {namespace} is {len(text)} characters, over the limit of "
                f"{limit}: index fewer fields (index=[...]) or raise MEMOS_MAX_TEXT_CHARS"
            )
        labels = {ITEM: "1", KEY: op.key, INDEXED: "1" if text else "0"}
        labels.update({f"{VALUE}{i // PIECE}": raw[i : i + PIECE] for i in range(0, len(raw), PIECE)})
        if op.ttl is not None:
            labels[TTL] = repr(float(op.ttl))
        return _Put(op=op, ns=ns, content=text or raw[:limit], labels=labels)

    def _index_text(self, value: dict[str, Any], raw: str, index: Any) -> str:
        """The text recall indexes for a value ('' when it has none)."""
        if index is False:
            return ""
        paths = self._fields if index is None else [(p, tokenize_path(p) if p != "$" else p) for p in index]
        texts: list[str] = []
        for path, tokens in paths:
            texts.extend([raw] if path == "$" else get_text_at_path(value, tokens))
        return "\n".join(t for t in texts if t.strip())

    def _memos_namespace(self, namespace: tuple[str, ...], *, strict: bool = False) -> Namespace | None:
        """The memos namespace of a LangGraph namespace or prefix; None (strict: an error) when it cannot be one."""
        room = MAX_NAMESPACE_DEPTH - len(self.root)
        if len(namespace) > room:
            if strict:
                raise StoreNamespaceError(f"namespace {namespace} has {len(namespace)} labels; this store holds {room}")
            return None
        segments = []
        for label in namespace:
            segment = encode_label(label)
            if segment is None:
                if strict:
                    raise StoreNamespaceError(
                        f"namespace label {label!r} is too long to store: at most 64 letters, digits, '_', '@', '-',"
                        f" or {MAX_ENCODED_BYTES} UTF-8 bytes otherwise"
                    )
                return None
            segments.append(segment)
        return (*self.root, *segments)

    # ---- reads ---------------------------------------------------------------------------------

    def _select(
        self, ns: Namespace, now: datetime, *, exact: bool = False, key: str | None = None, limit: int | None = None
    ) -> list[Stored]:
        """Live items at (exact) or under a memos namespace, oldest first; only the readable ones."""
        mos = self.session.mos
        labels = {ITEM: "1"} if key is None else {ITEM: "1", KEY: key}
        flt = CubeFilter(
            prefixes=mos.governance.readable_prefixes(self.session.user, ns),
            ns="/".join(ns) if exact else None,
            kinds=[Kind.plaintext.value],
            labels=labels,
            now=now,
        )
        return [s for cube in mos.catalog.select(flt, limit=limit) if (s := _decode(cube, self.root)) is not None]

    def _items(self, ns: Namespace, now: datetime, cache: dict[Namespace, list[Stored]]) -> list[Stored]:
        """Live items under a memos namespace in listing order: by namespace order mark, then first put."""
        if ns not in cache:
            cache[ns] = sorted(self._select(ns, now), key=lambda s: s.order)
        return cache[ns]

    def _find(self, namespace: tuple[str, ...], key: str, now: datetime) -> Stored | None:
        ns = self._memos_namespace(namespace)
        found = self._select(ns, now, exact=True, key=key) if ns is not None else []
        return found[-1] if found else None

    def _get(self, op: GetOp, now: datetime, refresh: dict[str, Stored]) -> Item | None:
        stored = self._find(tuple(op.namespace), op.key, now)
        if stored is None:
            return None
        if op.refresh_ttl and stored.ttl is not None:
            refresh[stored.cube.id] = stored
        return stored.item()

    def _search(
        self, op: SearchOp, now: datetime, cache: dict[Namespace, list[Stored]], refresh: dict[str, Stored]
    ) -> list[SearchItem]:
        ns = self._memos_namespace(tuple(op.namespace_prefix))
        if ns is None:
            return []
        found = [s for s in self._items(ns, now, cache) if matches(s.value, op.filter)]
        if op.query and op.query.strip():
            ranked = self._rank(ns, op.query, [s for s in found if s.indexed], op.offset + op.limit, now)
            kept = ranked[op.offset : op.offset + op.limit]
            if len(kept) < op.limit:
                kept += [(None, s) for s in found if not s.indexed][: op.limit - len(kept)]
        else:
            kept = [(None, s) for s in found[op.offset : op.offset + op.limit]]
        if op.refresh_ttl:
            refresh.update((s.cube.id, s) for _, s in kept if s.ttl is not None)
        return [s.item(search=True, score=score) for score, s in kept]  # type: ignore[misc]

    def _rank(
        self, ns: Namespace, query: str, indexed: list[Stored], need: int, now: datetime
    ) -> list[tuple[float | None, Stored]]:
        """The indexed items in recall's order with their fused scores, the best `need` of them."""
        by_id = {s.cube.id: s for s in indexed}
        if not by_id or need <= 0:
            return []
        mos = self.session.mos
        searchable = CubeFilter(
            prefixes=mos.governance.readable_prefixes(self.session.user, ns), kinds=[Kind.plaintext.value], now=now
        )
        # recall may rank cubes that are not candidates (filtered out, unindexed, other cubes) above them
        others = max(0, mos.catalog.count(searchable) - len(by_id))
        hits = self.session.recall(ns, query, k=min(MAX_RECALL, need + others))
        return [(h.score, by_id[h.cube.id]) for h in hits if h.cube.id in by_id][:need]

    def _list_namespaces(
        self, op: ListNamespacesOp, now: datetime, cache: dict[Namespace, list[Stored]]
    ) -> list[tuple[str, ...]]:
        names = list(dict.fromkeys(s.namespace for s in self._items(self.root, now, cache)))
        if op.match_conditions:
            names = [n for n in names if all(does_match(c, n) for c in op.match_conditions)]
        ordered = sorted({n[: op.max_depth] for n in names}) if op.max_depth is not None else sorted(names)
        return ordered[op.offset : op.offset + op.limit]

    # ---- writes --------------------------------------------------------------------------------

    def _refresh(self, items: Iterable[Stored]) -> None:
        """Push each item's expiry a TTL past now; skipped where the user may only read."""
        now = self.session.mos.clock.now()
        for stored in items:
            assert stored.ttl is not None
            expires = now + timedelta(minutes=stored.ttl)
            if stored.cube.header.lifecycle.expires_at == expires:
                continue
            try:
                self.session.update(stored.cube.id, expires_at=expires)
            except PermissionDenied:
                continue

    def _apply(self, puts: dict[tuple[tuple[str, ...], str], _Put], now: datetime) -> None:
        """Write the puts: updates and deletes one by one, new items of a namespace in one write."""
        orders: dict[Namespace, str] = {}
        fresh: dict[Namespace, list[WriteRequest]] = {}
        for put in puts.values():
            if put.ns not in orders:
                # a namespace keeps its place while it holds items; one that holds none gets a new one
                live = self._select(put.ns, now, exact=True, limit=1)
                orders[put.ns] = live[0].order if live else new_id()
            old = self._find(put.op.namespace, put.op.key, now)
            if not put.labels:
                if old is not None:
                    self.session.forget(old.cube.id, hard=self.hard_delete)
                continue
            labels = {**put.labels, ORDER: orders[put.ns]}
            if old is None:
                seconds = put.op.ttl * 60 if put.op.ttl is not None else None
                provenance = {"source": "tool", "external_id": put.op.key}
                request = WriteRequest(put.content, Level.long, None, provenance, [TAG], labels, ttl=seconds)
                fresh.setdefault(put.ns, []).append(request)
                continue
            moment = self.session.mos.clock.now()
            labels[UPDATED] = moment.isoformat()
            expires = None if old.cube.header.lifecycle.expires_at is None else NEVER
            if put.op.ttl is not None:
                expires = moment + timedelta(minutes=put.op.ttl)
            self.session.update(old.cube.id, put.content, labels=labels, expires_at=expires)
        for ns, requests in fresh.items():
            self.session.write_many(ns, requests)

    # ---- extras --------------------------------------------------------------------------------

    def cube(self, namespace: tuple[str, ...], key: str) -> MemCube | None:
        """The cube that holds a live item (None when there is none)."""
        stored = self._find(check_labels(namespace), _check_key(key, put=False), self.session.mos.clock.now())
        return stored.cube if stored is not None else None

    def sweep_ttl(self) -> int:
        """Forget the items whose TTL ran out (they are never returned anyway); return how many."""
        mos = self.session.mos
        flt = CubeFilter(
            prefixes=mos.governance.readable_prefixes(self.session.user, self.root),
            kinds=[Kind.plaintext.value],
            labels={ITEM: "1"},
            expiring_by=mos.clock.now(),
        )
        due = mos.catalog.select(flt)
        for cube in due:
            self.session.forget(cube.id, hard=self.hard_delete)
        return len(due)

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> concurrent.futures.Future[None]:
        """Run sweep_ttl in a thread every interval (given, else the ttl config's, else 5 minutes); cancel to stop."""
        interval = sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        _check_minutes(interval, "sweep_interval_minutes")
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.add_done_callback(lambda f: self._stop.set() if f.cancelled() else None)
        if self._sweeper is not None and self._sweeper.is_alive():
            return future
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(float(interval) * 60):
                try:
                    self.sweep_ttl()
                except Exception as exc:  # retried at the next interval
                    log.warning("TTL sweep failed; retried at the next interval", error=str(exc))
            if not future.done():
                future.set_result(None)

        self._sweeper = threading.Thread(target=loop, daemon=True, name="memos-langgraph-ttl")
        self._sweeper.start()
        return future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; True when it is stopped (or never ran)."""
        if self._sweeper is not None:
            self._stop.set()
            self._sweeper.join(timeout)
            if self._sweeper.is_alive():
                return False
            self._sweeper = None
        return True


def _check_key(key: Any, *, put: bool = True) -> str:
    if not isinstance(key, str):
        raise UserError(f"an item key is a string, not {type(key).__name__}")
    if put and len(key) > MAX_KEY_CHARS:
        raise UserError(
            f"item key {key[:40]!r}... is {len(key)} characters; MemosStore keys are at most {MAX_KEY_CHARS}"
        )
    return key


def _check_count(op: Any, *names: str) -> None:
    for name in names:
        value = getattr(op, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"{name} must be a non-negative integer, got {value!r}")


def _check_minutes(value: Any, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{what} is a positive number of minutes, got {value!r}")
