"""Build and serve the dashboard app for one or more run stores."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import dash

from dashboard.auth import check_token, is_loopback, require_token
from dashboard.callbacks import Callbacks, register
from dashboard.data import Catalog
from dashboard.layout import page

ASSETS = Path(__file__).parent / "assets"


def create_app(store_paths: Sequence[str | Path] | str | Path, token: str | None = None) -> dash.Dash:
    """A Dash app over the stores at ``store_paths``, opened read-only.

    The app exposes ``app.catalog`` (the cached store access) and ``app.callbacks`` (the callback bodies
    as plain methods). A path that is not a file raises ``FileNotFoundError``. With ``token``, every
    request must carry it (``dashboard.auth``).
    """
    if token is not None:
        check_token(token)
    catalog = Catalog(store_paths)
    app = dash.Dash(
        __name__, title="landscape", assets_folder=str(ASSETS), update_title=None,
        suppress_callback_exceptions=False, enable_mcp=False,
    )
    app.layout = lambda: page(catalog)
    callbacks = Callbacks(catalog)
    register(app, callbacks)
    if token is not None:
        require_token(app.server, token)
    app.catalog = catalog
    app.callbacks = callbacks
    return app


def serve(store_paths: Sequence[str | Path] | str | Path, host: str = "127.0.0.1", port: int = 8050,
          debug: bool = False, token: str | None = None) -> None:
    """Serve the dashboard for ``store_paths`` at http://host:port/ until interrupted (local-only by default).

    A host other than a loopback address needs ``token`` (see ``dashboard.auth``); debug mode, whose
    debugger runs code sent to it, is for loopback hosts only.
    """
    if not is_loopback(host):
        if token is None:
            raise ValueError(f"serving on {host!r} makes the dashboard reachable from other machines: pass a token.")
        if debug:
            raise ValueError(f"debug mode on {host!r} would let anyone who reaches the port run code; use 127.0.0.1.")
    app = create_app(store_paths, token=token)
    if not debug:  # the page polls every 2 s: keep the per-request log lines out of the terminal
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app.run(host=host, port=int(port), debug=debug, dev_tools_disable_version_check=True)
