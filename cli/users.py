"""Users and sharing: `users list`, `users add`, `share`, `revoke`, `grants`."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import fmt_time, open_home, open_session

users_app = typer.Typer(help="List and add users.", no_args_is_help=True)


@users_app.command("list")
def list_users(ctx: typer.Context) -> None:
    """Every registered user, with when it was created."""
    with open_home(ctx) as mos:
        found = mos.users()
    for name, created in found:
        typer.echo(f"{name}  {fmt_time(created, seconds=True)}")


@users_app.command("add")
def add_user(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The new user's name.")]) -> None:
    """Register a user (they own the namespace root named after them)."""
    with open_home(ctx) as mos:
        existed = any(n == name for n, _ in mos.users())
        mos.as_user(name)
    typer.echo(f"user {name} already exists" if existed else f"added user {name}")


def share(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="Namespace you own, e.g. alice/chat.")],
    user: Annotated[str, typer.Argument(help="The user to share it with.")],
    right: Annotated[str, typer.Option("--right", help="read or write (write implies read).")] = "read",
) -> None:
    """Let another user read (or write) a namespace and everything below it."""
    with open_session(ctx) as session:
        session.share(namespace, user, right)
    typer.echo(f"{user} may now {right} {namespace.strip('/')}")


def revoke(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="Namespace you own.")],
    user: Annotated[str, typer.Argument(help="The user whose grant to withdraw.")],
) -> None:
    """Withdraw a grant made with share."""
    with open_session(ctx) as session:
        session.revoke(namespace, user)
    typer.echo(f"revoked {user}'s grant on {namespace.strip('/')}")


def grants(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="Namespace to list grants at or below.")],
) -> None:
    """Grants at or below a namespace."""
    with open_session(ctx) as session:
        found = session.grants(namespace)
    if not found:
        typer.echo("no grants")
    for g in found:
        typer.echo(f"{g['ns']}  {g['grantee']}  {g['right']}")


def register(app: typer.Typer) -> None:
    """Add the user commands to the app."""
    app.add_typer(users_app, name="users")
    app.command()(share)
    app.command()(revoke)
    app.command()(grants)
