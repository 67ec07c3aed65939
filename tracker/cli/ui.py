"""``tracker ui``: the web UI over a store, in this process (docs/ui.md).

    tracker ui                          # ./.tracker (or $TRACKER_STORE) on 127.0.0.1:8089
    tracker ui --store /data/tracker --port 9000
    tracker ui --store http://team-server:8088   # a team server, $TRACKER_API_TOKEN

On a directory store it needs no token, so it binds 127.0.0.1 unless told otherwise. A
team server serves the same UI itself, at its own address (with a token).
"""

from __future__ import annotations

import click

from tracker.core.stores import open_store, store_kind

from . import common


@click.command("ui")
@click.option(
    "--store",
    metavar="DIR|URL",
    default=None,
    help="The store: a directory, postgresql://..., or a team server's http(s):// address "
    "(default: $TRACKER_STORE, else ./.tracker).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8089, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def ui_cmd(store: str | None, host: str, port: int, log_level: str) -> None:
    """Browse runs in a web browser: runs table, run pages with charts, compare, ranks."""
    if store_kind(store) == "directory":
        common.open_readonly(store)  # says clearly that there is no store there
    backend = open_store(store, create=False, readonly=True)
    import uvicorn  # fastapi and uvicorn: pip install 'tracker-dl[server]'

    from tracker.server.ui_routes import create_ui_app

    app = create_ui_app(store=backend)
    click.echo(f"tracker ui: {backend.location} on http://{host}:{port}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
