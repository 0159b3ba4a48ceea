"""Memory tier commands: consolidate, migrate and ask (activation blocks and LoRA adapters built from plaintext).

The model comes from the settings (MEMOS_LLM). Options are checked before the home is opened, so a
typo fails at once instead of after a local model has been loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from memos.errors import UserError

from .common import open_session, plural, print_json, shorten

if TYPE_CHECKING:
    from memos.cube import Kind, MemCube
    from memos.kernel import Consolidation
    from memos.prompt import Answer

#: what `consolidate --to` accepts (plaintext is where cubes come from, not where they go)
_CONSOLIDATE_TO = ("parametric", "activation")
#: `--level all` consolidates cubes of every level
_LEVELS = ("long", "mid", "short", "all")
#: width of the cube text shown per working-set item by `ask --explain`
_EXPLAIN_TEXT_WIDTH = 72


def consolidate(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="Namespace whose memories to consolidate, e.g. alice/chat.")],
    to: Annotated[str, typer.Option("--to", help="parametric (a LoRA adapter) or activation (a KV block).")],
    level: Annotated[str, typer.Option("--level", help="Use cubes of this level: long, mid, short or all.")] = "long",
    steps: Annotated[int | None, typer.Option("--steps", help="parametric: optimizer steps.")] = None,
    rank: Annotated[int | None, typer.Option("--rank", help="parametric: the LoRA rank.")] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--learning-rate", help="parametric: the AdamW learning rate.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the cube and the build report as JSON.")] = False,
) -> None:
    """Turn a namespace's memories into a LoRA adapter or its activation block (the plaintext cubes stay)."""
    from memos.cube import Kind, parse_namespace

    parse_namespace(namespace)
    target = _kind(to, _CONSOLIDATE_TO)
    levels = _level(level)
    lora = _lora(steps, rank, learning_rate)
    if lora and target != Kind.parametric:
        raise UserError("--steps, --rank and --learning-rate apply to --to parametric only")
    with open_session(ctx) as session:
        done = session.consolidate(namespace, target, level=levels, lora=lora or None)
    if as_json:
        print_json({"cube": done.cube.model_dump(mode="json"), "sources": done.sources, "report": done.report})
    else:
        typer.echo(consolidation_line(done))


def consolidation_line(done: Consolidation) -> str:
    """What `consolidate` built, as one line."""
    from memos.cube import Kind

    cube = done.cube
    if cube.kind == Kind.parametric:
        r = done.report
        return (
            f"trained adapter {cube.id} on {plural(done.sources, 'cube')} ({plural(r['steps'], 'step')}) "
            f"in {r['seconds']:.1f} s: loss {r['loss_before']:.2f} -> {r['loss_after']:.2f} "
            f"(adapter {size(r['adapter_bytes'])})"
        )
    version = f" (version {cube.header.version})" if cube.header.version > 1 else ""
    return (
        f"built activation block {cube.id}{version}: {plural(done.sources, 'cube')}, "
        f"{plural(cube.header.tokens, 'token')}"
    )


def migrate(
    ctx: typer.Context,
    cube_ids: Annotated[
        list[str], typer.Argument(help="Cube ids: plaintext cubes of one namespace, or derived cubes.")
    ],
    to: Annotated[str, typer.Option("--to", help="plaintext, activation or parametric.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the resulting cubes as JSON.")] = False,
) -> None:
    """Move cubes between kinds: plaintext into one block or adapter, a block or adapter back to plaintext."""
    from memos import inputs
    from memos.cube import Kind

    target = _kind(to, tuple(k.value for k in Kind))
    ids = [inputs.cube_id(i) for i in cube_ids]
    with open_session(ctx) as session:
        cubes = session.migrate(ids, target)
    if as_json:
        print_json([c.model_dump(mode="json") for c in cubes])
        return
    for cube in cubes:
        typer.echo(cube_line(cube))


def cube_line(cube: MemCube) -> str:
    """A cube as `id kind level`."""
    return f"{cube.id} {cube.kind.value} {cube.level.value}"


def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question to answer with memory.")],
    namespace: Annotated[
        str | None, typer.Option("--ns", "-n", help="Namespace to answer from (default: your own root namespace).")
    ] = None,
    budget: Annotated[int, typer.Option("--budget", "-b", help="Token budget of the working set.")] = 1500,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Most tokens to generate.")] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Also show the block, adapters and memories the prompt used.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer and what it used as JSON.")] = False,
) -> None:
    """Answer a question with the configured LLM (MEMOS_LLM), the working set as prompt."""
    from memos.cube import parse_namespace

    # checked before the home (and with it the model) is loaded: bad input fails fast and on one line
    if not question.strip():
        raise UserError("the question is empty: give some words")
    if namespace is not None:
        parse_namespace(namespace)
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"--max-tokens must be at least 1, got {max_tokens}")
    with open_session(ctx) as session:
        # only a missing --ns defaults to the user's root namespace (an empty one was refused above)
        reply = session.ask(
            session.user if namespace is None else namespace, question, budget_tokens=budget, max_tokens=max_tokens
        )
    if as_json:
        print_json(answer_json(reply))
        return
    typer.echo(reply.text)
    if explain:
        typer.echo("\n".join(explain_lines(reply)))


def answer_json(reply: Answer) -> dict[str, Any]:
    """An answer as plain JSON data."""
    working = reply.working_set
    block = working.activation
    usage = reply.completion.usage
    return {
        "text": reply.text,
        "namespace": "/".join(working.namespace),
        "question": working.query,
        "model": reply.completion.model,
        "finish_reason": reply.completion.finish_reason,
        "cached_tokens": reply.cached_tokens,
        "activation": {"id": block.id, "tokens": block.header.tokens} if block is not None else None,
        "adapters": reply.adapters,
        "usage": usage.model_dump() if usage is not None else None,
        "tokens": working.tokens,
        "budget_tokens": working.budget_tokens,
        "items": [{"id": item.cube.id, "section": item.section} for item in working.items],
    }


def explain_lines(reply: Answer) -> list[str]:
    """What the prompt of an answer was made of: block, adapters, token counts, and each working-set item."""
    working = reply.working_set
    block = working.activation
    if block is None:
        lines = ["-- activation block: none"]
    else:
        lines = [
            f"-- activation block {block.id}: {plural(block.header.tokens, 'token')}, "
            f"{plural(reply.cached_tokens, 'prompt token')} cached"
        ]
    lines.append(f"-- adapters: {', '.join(reply.adapters) or 'none'}")
    usage = reply.completion.usage
    if usage is not None:
        lines.append(
            f"-- usage: {plural(usage.prompt_tokens, 'prompt token')}, "
            f"{plural(usage.completion_tokens, 'completion token')}"
        )
    lines.append(
        f"-- working set: {plural(len(working.items), 'item')}, {working.tokens}/{working.budget_tokens} tokens"
    )
    width = max((len(item.section) for item in working.items), default=0)
    lines += [
        f"   {item.section:<{width}} {item.cube.id} {shorten(item.cube.text, _EXPLAIN_TEXT_WIDTH)}"
        for item in working.items
    ]
    return lines


def size(num_bytes: int) -> str:
    """A byte count for people: '512 bytes', '266 KB', '1.4 MB'."""
    if num_bytes < 1024:
        return plural(num_bytes, "byte")
    if num_bytes < 1024**2:
        return f"{num_bytes / 1024:.0f} KB"
    return f"{num_bytes / 1024**2:.1f} MB"


def _kind(value: str, accepted: tuple[str, ...]) -> Kind:
    from memos.cube import Kind

    if value not in accepted:
        raise UserError(f"invalid --to {value!r}: use {_either(accepted)}")
    return Kind(value)


def _level(value: str) -> str | None:
    if value not in _LEVELS:
        raise UserError(f"invalid --level {value!r}: use {_either(_LEVELS)}")
    return None if value == "all" else value


def _lora(steps: int | None, rank: int | None, learning_rate: float | None) -> dict[str, Any]:
    """The LoRA settings given on the command line (only those), checked here so a bad one fails in one line."""
    out: dict[str, Any] = {}
    if steps is not None:
        if steps < 1:
            raise UserError(f"--steps must be at least 1, got {steps}")
        out["steps"] = steps
    if rank is not None:
        if rank < 1:
            raise UserError(f"--rank must be at least 1, got {rank}")
        out["r"] = rank
    if learning_rate is not None:
        if not learning_rate > 0:
            raise UserError(f"--learning-rate must be above 0, got {learning_rate:g}")
        out["learning_rate"] = learning_rate
    return out


def _either(values: tuple[str, ...]) -> str:
    """'a, b or c'."""
    return f"{', '.join(values[:-1])} or {values[-1]}" if len(values) > 1 else values[0]


def register(app: typer.Typer) -> None:
    """Add the tier commands to the app."""
    app.command()(consolidate)
    app.command()(migrate)
    app.command()(ask)
