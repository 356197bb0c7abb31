"""The web dashboard: Dash + Plotly views of one or more run stores, updated live.

``create_app(store_paths)`` builds the app; ``serve(store_paths, host, port)`` runs it. The figures are
usable on their own from :mod:`dashboard.figures` (which does not import Dash).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dashboard.app import create_app, serve

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    # Dash loads on first use, so `from dashboard import figures` in a notebook stays light.
    if name in __all__:
        from dashboard import app

        return getattr(app, name)
    raise AttributeError(f"module 'dashboard' has no attribute {name!r}")
