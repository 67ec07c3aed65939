"""The team server: ``tracker server`` serves a store over HTTP to clients that open
``store="http://host:8088"``.

``app.py`` is the ASGI app (FastAPI, imported only when a server starts: a client never
imports it), ``tokens.py`` makes and checks API tokens, ``wire.py`` encodes and checks
what travels. docs/server.md describes running one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """``app.create_app``: the ASGI app serving a store."""
    from .app import create_app as make

    return make(*args, **kwargs)


def serve(*args: Any, **kwargs: Any) -> None:
    """``app.serve``: run a server in this process."""
    from .app import serve as run

    run(*args, **kwargs)
