"""Plugins: `plugins list`, and the commands plugins register, run as `memos NAME`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from memos.errors import BackendError

from .common import print_json

if TYPE_CHECKING:
    from memos.registry import NameConflict, PluginInfo

plugins_app = typer.Typer(help="Inspect the installed plugins.", no_args_is_help=True)


@plugins_app.command("list")
def list_plugins(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Every installed plugin: where it comes from, whether it loaded, what it registered, and name conflicts."""
    from memos.registry import ENV, get_registry

    registry = get_registry()
    found = registry.plugins
    conflicts = registry.conflicts + _shadowed_commands(ctx, found)
    if as_json:
        print_json(
            {
                "allow": None if registry.allow is None else sorted(registry.allow),
                "plugins": [_plugin_json(info) for info in found],
                "conflicts": [_conflict_json(conflict) for conflict in conflicts],
            }
        )
        return
    lines = [] if found else ["no plugins installed"]
    for info in found:
        status = info.status.value
        if info.error:
            status += f": {info.error}"
        elif status == "disabled":
            status += f" (not in {ENV})"
        lines.append(f"{info.name} ({info.source}): {status}")
        lines += [f"  {kind.replace('_', ' ')}: {', '.join(names)}" for kind, names in info.names().items()]
    lines += [_conflict_line(conflict) for conflict in conflicts]
    typer.echo("\n".join(lines))


def _plugin_json(info: PluginInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "source": info.source,
        "value": info.value,
        "status": info.status.value,
        "error": info.error,
        "registered": info.names(),
    }


def _conflict_json(conflict: NameConflict) -> dict[str, str]:
    return {"kind": conflict.kind, "name": conflict.name, "kept": conflict.kept, "ignored": conflict.ignored}


def _conflict_line(conflict: NameConflict) -> str:
    kind = conflict.kind.replace("_", " ")
    return f"conflict: {kind} {conflict.name!r} from {conflict.ignored} is ignored; the one from {conflict.kept} stays"


def _shadowed_commands(ctx: typer.Context, found: list[PluginInfo]) -> list[NameConflict]:
    """Plugin commands named like a built-in command: the built-in runs."""
    from memos.registry import CORE_DIST, NameConflict

    root = ctx.find_root().command
    builtin = set(root.commands) if isinstance(root, click.Group) else set()
    return [
        NameConflict(item.kind, item.name, CORE_DIST, item.plugin)
        for info in found
        for item in info.registered
        if item.kind == "cli_commands" and item.name in builtin
    ]


def plugin_command(name: str) -> click.Command | None:
    """The command a plugin registered under `name`, as a click command; None when no plugin did."""
    from memos.registry import get_registry

    item = get_registry().registration("cli_commands", name)
    if item is None:
        return None
    obj = item.obj
    if isinstance(obj, click.Command):
        command = obj
    elif isinstance(obj, typer.Typer):
        command = typer.main.get_command(obj)
    elif callable(obj):
        app = typer.Typer(add_completion=False)
        app.command(name)(obj)
        command = typer.main.get_command(app)
    else:
        raise BackendError(
            f"plugin {item.plugin!r} registered command {name!r} as {type(obj).__name__}, "
            "not a typer app, a click command or a function",
            plugin=item.plugin,
        )
    command.name = name
    return command


def register(app: typer.Typer) -> None:
    """Add the plugin commands to the app."""
    app.add_typer(plugins_app, name="plugins")
