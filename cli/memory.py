"""Memory commands: init, add, ingest, search, tick, stats, export, import, reindex."""

from __future__ import annotations

import itertools
import json
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from memos.errors import UserError

from .common import (
    acting_user,
    console,
    fmt_time,
    globals_of,
    load_settings,
    make_home,
    open_home,
    open_session,
    parse_duration,
    parse_labels,
    parse_when,
    plural,
    print_json,
    read_text,
    shorten,
    stderr_console,
)

if TYPE_CHECKING:
    from memos.ingest import PolicySummary
    from memos.kernel import MemOS, WriteRequest
    from memos.paging import SegmentInfo
    from memos.policy import Policy
    from memos.retrieval import Hit

T = TypeVar("T")
#: progress bars appear only for ingests at least this long (and only on a terminal)
MIN_TURNS_FOR_PROGRESS = 200

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def init(
    ctx: typer.Context,
    user: Annotated[
        str | None, typer.Option("--user", help="Default user of this home (else the global --user).")
    ] = None,
    embedder: Annotated[
        str | None, typer.Option("--embedder", help="Embedder of this home (else the global --embedder).")
    ] = None,
) -> None:
    """Create a home and write its memos.toml (user and embedder, when given)."""
    from memos.config import CONFIG_FILE
    from memos.cube import check_user_name
    from memos.embed import make_embedder

    g = globals_of(ctx)
    user = user or g.user
    embedder = embedder or g.embedder
    settings = load_settings(ctx)
    if user is not None:
        check_user_name(user)
    if embedder is not None:
        make_embedder(settings.model_copy(update={"embedder": embedder}))
    home = settings.home
    make_home(home)
    config = home / CONFIG_FILE
    values: dict[str, Any] = tomllib.loads(config.read_text()) if config.is_file() else {}
    if user is not None:
        values["user"] = user
    if embedder is not None:
        values["embedder"] = embedder
    config.write_text(_toml(values))
    with open_home(ctx) as mos:
        if user is not None:
            mos.as_user(user)
        typer.echo(f"initialised {home} (user {user or acting_user(mos.settings)}, embedder {mos.embedder.id})")


def _toml(values: dict[str, Any]) -> str:
    lines = ["# memos settings for this home; MEMOS_* environment variables override them"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value}")
        elif isinstance(value, str):
            # a JSON string is a valid TOML basic string
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            raise UserError(f"memos.toml setting {key!r} must be a string, number or boolean")
    return "\n".join(lines) + "\n"


def add(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="Namespace, e.g. alice/chat.")],
    text: Annotated[str, typer.Argument(help="The memory's text ('-' reads standard input).")],
    level: Annotated[str, typer.Option("--level", help="short, mid or long.")] = "short",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="A label key=value (repeatable).")] = None,
    event_time: Annotated[
        str | None, typer.Option("--event-time", help="When it happened (ISO-8601, e.g. 2023-05-08T13:56).")
    ] = None,
    external_id: Annotated[str | None, typer.Option("--external-id", help="An id from the source system.")] = None,
    ttl: Annotated[str | None, typer.Option("--ttl", help="Expire after this long: seconds, or 15m, 12h, 7d.")] = None,
) -> None:
    """Write one memory and print its id."""
    provenance = {"external_id": external_id} if external_id is not None else None
    labels = parse_labels(label)
    seconds = parse_duration(ttl)
    when = parse_when(event_time, "--event-time")
    body = read_text(text)
    with open_session(ctx) as session:
        cube = session.write(
            namespace, body, level=level, event_time=when, provenance=provenance, tags=tag, labels=labels, ttl=seconds
        )
    typer.echo(cube.id)


def ingest(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A conversation file (json, jsonl or LoCoMo).")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Target namespace, e.g. alice/chat.")],
    fmt: Annotated[str, typer.Option("--format", help="auto, json, jsonl or locomo.")] = "auto",
    batch: Annotated[int, typer.Option("--batch", min=1, max=4096, help="Turns per write transaction.")] = 64,
    again: Annotated[
        bool, typer.Option("--again", help="Also write turns whose id is already stored in the namespace.")
    ] = False,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="Let this memory policy decide what to write (see `memos plugins list`)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Write every turn of a conversation file as a memory (the whole file is checked first).

    Turns whose id (external id) is already stored in the target namespace are skipped, so running
    the same ingest twice, or after an interruption, writes each turn once. With --policy, a memory
    policy sees the turns one by one and decides what to insert, update or delete.
    """
    from memos import ingest as reader
    from memos.cube import Right, ns_path, parse_namespace

    target = parse_namespace(namespace)
    fmt = reader.check_format(fmt)
    chosen: Policy | None = None
    if policy is not None:
        if again:
            raise UserError("--again applies only without --policy: the policy decides what to write")
        from memos.registry import get_registry

        chosen = get_registry().policy(policy)
    with open_session(ctx) as session:
        mos = session.mos
        limit = mos.settings.max_text_chars
        mos.governance.require(session.user, target, Right.write)
        found = reader.scan(file, fmt, max_text_chars=limit, max_bytes=mos.settings.max_ingest_bytes)
        if found.num_turns == 0:
            raise UserError(f"{file} holds no conversation turns")
        targets = [target + (suffix or ()) for suffix in found.suffixes]
        for ns in targets:
            mos.governance.require(session.user, ns, Right.write)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        err = stderr_console()
        with Progress(
            TextColumn("ingesting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not err.is_terminal or found.num_turns < MIN_TURNS_FOR_PROGRESS,
            transient=True,
        ) as progress:
            task = progress.add_task("ingest", total=found.num_turns)
            written = skipped = 0
            summary = None
            if chosen is not None:
                summary = reader.PolicySummary(policy=chosen.name)
                observed = reader.iter_observations(
                    file, found.format, max_text_chars=limit, max_bytes=mos.settings.max_ingest_bytes
                )
                for suffix, group in itertools.groupby(observed, key=lambda item: item[0]):
                    turns = _advancing((item for _, item in group), lambda: progress.advance(task))
                    summary.add(reader.ingest_with_policy(session, target + (suffix or ()), turns, chosen))
            else:
                items = reader.iter_requests(
                    file, found.format, max_text_chars=limit, max_bytes=mos.settings.max_ingest_bytes
                )
                for suffix, requests in reader.batched(items, batch):
                    ns = target + (suffix or ())
                    fresh = requests if again else _not_yet_stored(mos, ns, requests)
                    skipped += len(requests) - len(fresh)
                    written += len(session.write_many(ns, fresh))
                    progress.advance(task, len(requests))
    where = ns_path(target) if len(targets) == 1 else f"{len(targets)} namespaces under {ns_path(target)}"
    sessions = plural(found.num_sessions, "session")
    facts = {
        "file": str(file),
        "format": found.format,
        "sessions": found.num_sessions,
        "namespaces": [ns_path(ns) for ns in targets],
    }
    if summary is not None:
        if as_json:
            print_json({**_policy_json(summary), **facts})
            return
        first_error = f"; first error: {summary.errors[0]}" if summary.errors else ""
        typer.echo(f"{policy_line(summary)} ({sessions}, format {found.format}) from {file} into {where}{first_error}")
        return
    if as_json:
        print_json({"written": written, "skipped": skipped, "turns": found.num_turns, **facts})
        return
    note = f"; skipped {plural(skipped, 'turn')} already stored" if skipped else ""
    typer.echo(f"ingested {plural(written, 'turn')} ({sessions}, format {found.format}) from {file} into {where}{note}")


def _advancing(items: Iterable[T], advance: Callable[[], object]) -> Iterator[T]:
    """The items, calling `advance` after each one is consumed."""
    for item in items:
        yield item
        advance()


def policy_line(summary: PolicySummary) -> str:
    """What a policy did, as the start of one line: ops applied (per kind) and failed, chunks seen."""
    kinds = ", ".join(plural(n, kind) for kind, n in sorted(summary.applied_by_kind.items()))
    return (
        f"policy {summary.policy}: applied {plural(summary.num_applied, 'op')}"
        f"{f' ({kinds})' if kinds else ''}, {summary.num_failed} failed, "
        f"over {plural(summary.num_chunks, 'chunk')}"
    )


def _policy_json(summary: PolicySummary) -> dict[str, Any]:
    return {
        "policy": summary.policy,
        "chunks": summary.num_chunks,
        "ops": summary.num_ops,
        "applied": summary.num_applied,
        "failed": summary.num_failed,
        "applied_by_kind": summary.applied_by_kind,
        "errors": summary.errors,
    }


def _not_yet_stored(mos: MemOS, ns: tuple[str, ...], requests: list[WriteRequest]) -> list[WriteRequest]:
    """The requests whose external id is not already a cube in the namespace."""
    ext = [r.provenance.get("external_id") for r in requests if r.provenance]
    stored = mos.catalog.existing_external_ids("/".join(ns), [e for e in ext if e])
    return [r for r in requests if not (r.provenance and r.provenance.get("external_id") in stored)]


def search(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="Namespace to search, with everything below it.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", "--top", help="How many results.")] = 10,
    level: Annotated[list[str] | None, typer.Option("--level", help="Only this level (repeatable).")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Only cubes with this tag (repeatable).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Only cubes with label key=value.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Event time at or after (ISO-8601).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Event time at or before (ISO-8601).")] = None,
    include_archived: Annotated[bool, typer.Option("--archived", help="Also search archived cubes.")] = False,
    as_json: Json = False,
) -> None:
    """Recall the memories that best match a query (dense + BM25, fused by rank)."""
    labels = parse_labels(label)
    event_from = parse_when(since, "--since")
    event_to = parse_when(until, "--until")
    with open_session(ctx) as session:
        hits = session.recall(
            namespace,
            query,
            k,
            level=level or None,
            tags=tag,
            labels=labels,
            event_from=event_from,
            event_to=event_to,
            include_archived=include_archived,
        )
    if as_json:
        print_json([_hit_json(rank, hit) for rank, hit in enumerate(hits, start=1)])
    elif not hits:
        typer.echo("no memories match")
    else:
        console().print(hits_table(hits))


def _hit_json(rank: int, hit: Hit) -> dict[str, Any]:
    return {
        "rank": rank,
        "score": hit.score,
        "dense": hit.dense,
        "bm25": hit.lexical,
        "dense_rank": hit.dense_rank,
        "bm25_rank": hit.lexical_rank,
        "cube": hit.cube.model_dump(mode="json"),
    }


def hits_table(hits: list[Hit], title: str | None = None, text_width: int = 72) -> Any:
    """A rich table of recall results: rank, fused score, dense cosine, BM25, level, event time, external id, text."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("dense", justify="right")
    table.add_column("bm25", justify="right")
    table.add_column("level")
    table.add_column("event time", no_wrap=True)
    table.add_column("external id", no_wrap=True)
    table.add_column("text", overflow="fold", min_width=24, ratio=1)
    for rank, hit in enumerate(hits, start=1):
        header = hit.cube.header
        table.add_row(
            str(rank),
            f"{hit.score:.4f}",
            "-" if hit.dense is None else f"{hit.dense:.3f}",
            "-" if hit.lexical is None else f"{hit.lexical:.2f}",
            hit.cube.level.value,
            fmt_time(header.event_time),
            header.provenance.external_id or "-",
            shorten(hit.cube.text, text_width),
        )
    return table


def tick(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run lifecycle work now: expiry, paging (short -> mid -> long term, page-out), pending vector syncs."""
    with open_session(ctx) as session:
        done = session.tick()
    if as_json:
        print_json(done)
    else:
        typer.echo(tick_line(done))


def tick_line(done: dict[str, int]) -> str:
    """A tick's report as one line."""
    return (
        f"expired {plural(done['expired'], 'cube')}, "
        f"moved {plural(done['moved'], 'page')} to mid-term "
        f"({plural(done['segments_created'], 'new segment')}, {plural(done['merged'], 'merge')}), "
        f"promoted {plural(done['promoted'], 'segment')} "
        f"({plural(done['knowledge_written'], 'knowledge cube')} written), "
        f"paged out {plural(done['paged_out'], 'segment')}, "
        f"archived {plural(done['archived'], 'knowledge cube')}, "
        f"built {plural(done['activated'], 'activation block')}, "
        f"re-synced {plural(done['vector_synced'], 'vector')}"
    )


def stats(
    ctx: typer.Context,
    namespace: Annotated[str | None, typer.Argument(help="Limit to this namespace.")] = None,
    as_json: Json = False,
) -> None:
    """Counts per kind, level and status, the paging state and hottest segments, for what you can read."""
    with open_session(ctx) as session:
        found = session.stats(namespace)
    counts = [{"kind": k, "level": lv, "status": s, "count": n} for (k, lv, s), n in sorted(found.counts.items())]
    if as_json:
        print_json(
            {
                "home": found.home,
                "embedder": found.embedder,
                "total": found.total,
                "counts": counts,
                "namespaces": [{"namespace": ns, "count": n} for ns, n in found.namespaces],
                "vectors": found.num_vectors,
                "pending_vector_sync": found.num_pending_vector_sync,
                "paging": found.paging,
                "hottest": [asdict(segment) for segment in found.hottest],
            }
        )
        return
    lines = [
        f"home: {found.home}",
        f"embedder: {found.embedder}",
        f"vectors: {found.num_vectors} ({found.num_pending_vector_sync} pending sync)",
        f"cubes: {found.total}",
    ]
    lines += [f"  {c['kind']} {c['level']} {c['status']}: {c['count']}" for c in counts]
    lines.append(f"namespaces: {len(found.namespaces)}")
    lines += [f"  {ns}: {n}" for ns, n in found.namespaces]
    lines += paging_lines(found.paging)
    lines += hottest_lines(found.hottest)
    typer.echo("\n".join(lines))


#: paging counts shown on their own lines by `paging_lines`; any other key is listed after them as is
_PAGING_SHOWN = frozenset(
    {
        "segments",
        "segments_paged_out",
        "short_pages",
        "mid_pages",
        "paged_out_pages",
        "profiles",
        "user_knowledge",
        "user_knowledge_archived",
        "assistant_knowledge",
        "assistant_knowledge_archived",
    }
)


def paging_lines(paging: dict[str, int]) -> list[str]:
    """The paging block of `memos stats`: segments, pages per level, profile and knowledge counts."""
    n = paging.get
    lines = [
        "paging:",
        f"  segments: {n('segments', 0)} active, {n('segments_paged_out', 0)} paged out",
        f"  pages: {n('short_pages', 0)} short, {n('mid_pages', 0)} mid, {n('paged_out_pages', 0)} paged out",
        f"  profiles: {n('profiles', 0)}",
        f"  user knowledge: {n('user_knowledge', 0)} ({n('user_knowledge_archived', 0)} archived)",
        f"  assistant knowledge: {n('assistant_knowledge', 0)} ({n('assistant_knowledge_archived', 0)} archived)",
    ]
    lines += [f"  {key.replace('_', ' ')}: {value}" for key, value in paging.items() if key not in _PAGING_SHOWN]
    return lines


def hottest_lines(hottest: list[SegmentInfo]) -> list[str]:
    """The hottest-segments block of `memos stats`: heat, visits, pages, paged-out flag, summary preview."""
    if not hottest:
        return ["hottest segments: none"]
    lines = ["hottest segments:"]
    for segment in hottest:
        flag = ", paged out" if segment.paged_out else ""
        lines.append(
            f"  {segment.ns}: heat {segment.heat:.2f}, {plural(segment.visits, 'visit')}, "
            f"{plural(segment.pages, 'page')}{flag}: {shorten(segment.summary, 64)}"
        )
    return lines


def export(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="Namespace to export, with everything below it.")],
    file: Annotated[Path, typer.Argument(help="Archive to write.")],
) -> None:
    """Write a namespace with full history to a portable archive."""
    with open_session(ctx) as session:
        summary = session.export(namespace, file)
    typer.echo(f"exported {namespace} to {file}{_summary(summary)}")


def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Archive made by `memos export`.")],
    into: Annotated[str | None, typer.Option("--into", help="Import into this namespace instead (new ids).")] = None,
) -> None:
    """Load an archive made by export, all or nothing."""
    with open_session(ctx) as session:
        summary = session.import_(file, into=into)
    typer.echo(f"imported {file}{_summary(summary)}")


def _summary(summary: Any) -> str:
    if not isinstance(summary, dict):
        return ""
    # the archive's path is already on the line
    parts = [f"{k} {v}" for k, v in summary.items() if k != "path" and isinstance(v, str | int | float)]
    return f" ({', '.join(parts)})" if parts else ""


def reindex(ctx: typer.Context) -> None:
    """Rebuild the vector index from the catalog with the configured embedder."""
    from memos.kernel import MemOS

    settings = load_settings(ctx)
    make_home(settings.home)
    mos = MemOS(settings, rebuild_vectors=True)
    try:
        count = mos.vectors.count()
        embedder = mos.embedder.id
    finally:
        mos.close()
    typer.echo(f"reindexed {plural(count, 'cube')} with {embedder}")


def register(app: typer.Typer) -> None:
    """Add the memory commands to the app."""
    app.command()(init)
    app.command()(add)
    app.command()(ingest)
    app.command()(search)
    app.command()(tick)
    app.command()(stats)
    app.command()(export)
    app.command("import")(import_)
    app.command()(reindex)
