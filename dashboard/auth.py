"""A shared access token for a dashboard served beyond this machine.

Bound to a loopback address the dashboard is reachable only from this machine. On any other address it
is reachable by anyone who can reach the port, so it then needs a token: every request (page, assets,
Dash callbacks) must carry it, either once as ``?token=...`` in the address — answered with a cookie and
a redirect to the same address without the token, so it does not linger in the address bar or history —
or as that cookie. The cookie holds an HMAC of the token, not the token itself; comparisons take constant
time. This is access control, not encryption: over an untrusted network, put the dashboard behind HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import urlencode

from flask import Flask, Response, redirect, request

COOKIE = "landscape_token"
ENV_VAR = "LANDSCAPE_TOKEN"
MIN_LENGTH = 8


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost``, 127.0.0.0/8, ::1); "" or 0.0.0.0 is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"landscape-dashboard-session", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def check_token(token: object) -> str:
    """``token`` if it is usable: a string of at least :data:`MIN_LENGTH` characters."""
    if not isinstance(token, str) or len(token) < MIN_LENGTH:
        raise ValueError(f"the dashboard token must be a string of at least {MIN_LENGTH} characters.")
    return token


def require_token(server: Flask, token: str) -> None:
    """Refuse (401) every request to ``server`` that carries neither ``token`` nor its cookie."""
    check_token(token)
    session = _cookie_value(token)

    @server.before_request
    def _check() -> Response | None:
        given = request.args.get("token")
        if given is not None and _same(given, token):
            rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
            target = request.path + (f"?{urlencode(rest)}" if rest else "")
            response = redirect(target) if request.method == "GET" else None
            if response is None:
                return None
            response.set_cookie(COOKIE, session, httponly=True, samesite="Strict")
            return response
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and _same(cookie, session):
            return None
        return Response("This dashboard needs its access token: open the address that `landscape dashboard` "
                        "printed (it ends in ?token=...).\n", status=401, mimetype="text/plain")
