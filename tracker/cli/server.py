"""``tracker server`` and ``tracker token create|list|revoke``: the team server.

The token commands open the server's store directly (a directory or
``postgresql://...``), not through the server: run them where that store is reachable.
A token's text is printed once, by ``create``; the store keeps only its hash.
"""

from __future__ import annotations

import datetime as _dt
import time

import click

from tracker.core.cleanup import parse_age
from tracker.core.errors import StoreError
from tracker.core.stores import Store, open_store, store_kind

from . import common

_STORE_HELP = "The server's store: a directory, or postgresql://USER@HOST/DB (default: $TRACKER_STORE, else ./.tracker)."


def _backend(store: str | None, *, create: bool) -> Store:
    if store_kind(store) == "http":
        raise StoreError(
            f"{store}: give the server's own store (a directory or postgresql://...), "
            "not a server address; run this where that store is reachable"
        )
    if store_kind(store) == "directory" and not create:
        common.open_readonly(store)  # says clearly that there is no store there
    return open_store(store, create=create)


@click.command("server")
@click.option("--store", metavar="STORE", default=None, help=_STORE_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8088, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def server_cmd(store: str | None, host: str, port: int, log_level: str) -> None:
    """Serve a store over HTTP to clients with store="http://HOST:PORT".

    Clients need a token (`tracker token create`) in $TRACKER_API_TOKEN.
    """
    st = _backend(store, create=True)
    st.close()
    from tracker.server.app import serve  # fastapi and uvicorn: only the server needs them

    click.echo(f"tracker server: serving {st.location} on http://{host}:{port}", err=True)
    serve(store, host, port, log_level)


@click.group("token")
def token_group() -> None:
    """Create, list and revoke API tokens of the team server (run where its store is)."""


@token_group.command("create")
@click.option("--project", "-p", required=True, help="The project the token may use.")
@click.option(
    "--scope",
    type=click.Choice(["read", "write"]),
    required=True,
    help="read: read the project's runs; write: also write them.",
)
@click.option("--name", default=None, help="What the token is for (shown by `token list`).")
@click.option(
    "--expires", metavar="AGE", default=None, help="Expire after AGE (90d, 12h); default never."
)
@click.option("--store", metavar="STORE", default=None, help=_STORE_HELP)
def token_create(
    project: str, scope: str, name: str | None, expires: str | None, store: str | None
) -> None:
    """Make a token and print it once (the store keeps only its hash)."""
    from tracker.server.tokens import create_token

    expires_in = None
    if expires is not None and expires.lower() != "never":
        try:
            expires_in = parse_age(expires)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--expires") from None
    st = _backend(store, create=True)
    text, record = create_token(st, project, scope, name=name, expires_in=expires_in)
    click.echo(text)
    until = "never expires" if record.expires_at is None else f"expires {_when(record.expires_at)}"
    click.echo(
        f"token {record.token_id}: {scope} access to project {project!r}, {until}. "
        "It is shown only now: keep it in TRACKER_API_TOKEN where runs are written or read.",
        err=True,
    )


@token_group.command("list")
@common.project_option
@common.json_option
@click.option("--store", metavar="STORE", default=None, help=_STORE_HELP)
def token_list(project: str | None, as_json: bool, store: str | None) -> None:
    """List tokens (never their secrets), oldest first."""
    st = _backend(store, create=False)
    now = time.time()
    records = st.tokens(project)
    if as_json:
        common.print_json(
            [
                {
                    "id": r.token_id,
                    "project": r.project,
                    "scope": r.scope,
                    "name": r.name,
                    "created_at": r.created_at,
                    "expires_at": r.expires_at,
                    "revoked_at": r.revoked_at,
                    "state": _state(r.expires_at, r.revoked_at, now),
                }
                for r in records
            ]
        )
        return
    if not records:
        click.echo("no tokens")
        return
    layout = common.Layout(
        common.Column("id"),
        common.Column("project", wrap=True),
        common.Column("scope"),
        common.Column("name", wrap=True),
        common.Column("created"),
        common.Column("expires"),
        common.Column("state"),
    )
    for r in records:
        layout.add_row(
            r.token_id, r.project, r.scope, r.name or "", _when(r.created_at),
            _when(r.expires_at) if r.expires_at else "never",
            _state(r.expires_at, r.revoked_at, now),
        )  # fmt: skip
    layout.print(common.console())


@token_group.command("revoke")
@click.argument("token_id")
@click.option("--store", metavar="STORE", default=None, help=_STORE_HELP)
def token_revoke(token_id: str, store: str | None) -> None:
    """Revoke a token: the server refuses it from its next request on."""
    from tracker.server.tokens import token_id_of

    token_id = token_id_of(token_id) or token_id  # the whole text works too; never echoed
    st = _backend(store, create=False)
    if not st.revoke_token(token_id, time.time()):
        raise StoreError(f"no token {token_id!r} in {st.location}")
    click.echo(f"revoked token {token_id}")


def _when(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _state(expires_at: float | None, revoked_at: float | None, now: float) -> str:
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "active"
