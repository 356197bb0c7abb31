"""The dashboard's access token: every request needs it (once in the address, then as a cookie)."""

from __future__ import annotations

import dash
import pytest

from dashboard import create_app, serve
from dashboard.auth import COOKIE, is_loopback

TOKEN = "correct-horse-battery"


@pytest.fixture
def client(shared_store):
    app = create_app([shared_store], token=TOKEN)
    yield app.server.test_client()
    app.catalog.close()


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.9.1", True), ("localhost", True),
                                            ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("", False),
                                            ("192.168.1.20", False), ("example.org", False), ("::", False)])
def test_only_loopback_addresses_count_as_local(host, loopback):
    assert is_loopback(host) is loopback


def test_every_request_needs_the_token(client):
    for path in ("/", "/_dash-layout", "/_dash-dependencies", "/assets/style.css"):
        refused = client.get(path)
        assert refused.status_code == 401 and b"needs its access token" in refused.data
    assert client.post("/_dash-update-component", json={}).status_code == 401
    assert client.get("/?token=wrong-token-value").status_code == 401
    client.set_cookie(COOKIE, TOKEN)  # the cookie holds an HMAC of the token, not the token
    assert client.get("/").status_code == 401


def test_the_token_in_the_address_becomes_a_cookie_and_leaves_the_address(client):
    first = client.get(f"/?token={TOKEN}&tab=hessian")
    assert first.status_code == 302 and first.headers["Location"].endswith("/?tab=hessian")
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None and TOKEN not in cookie.value and cookie.http_only and cookie.same_site == "Strict"
    assert client.get("/").status_code == 200
    assert client.get("/_dash-layout").status_code == 200


def test_serving_beyond_loopback_needs_a_token_and_no_debugger(shared_store, monkeypatch):
    calls = {}
    monkeypatch.setattr(dash.Dash, "run", lambda self, **kwargs: calls.update(kwargs))
    with pytest.raises(ValueError, match="pass a token"):
        serve([shared_store], host="0.0.0.0")
    with pytest.raises(ValueError, match="debug mode"):
        serve([shared_store], host="0.0.0.0", debug=True, token=TOKEN)
    with pytest.raises(ValueError, match="at least 8 characters"):
        create_app([shared_store], token="short")
    serve([shared_store], host="0.0.0.0", port=8124, token=TOKEN)
    assert calls["host"] == "0.0.0.0" and calls["port"] == 8124
