"""The dashboard's safety rules.

- **Bind**: 127.0.0.1 / ::1 / localhost by default; any other address needs a token
  (:func:`check_bind`), else ``fbr serve`` refuses to start. On loopback the dashboard answers
  only the loopback Host names (HTTP 400 for another: a DNS-rebinding page gets nothing).
- **Token**: when one is set, every request must carry it: ``Authorization: Bearer <token>``, or
  the ``fbr_token`` cookie that ``GET /login?token=<token>`` sets (HttpOnly, SameSite=Strict).
  Tokens are compared in constant time.
- **State changes** (only ``POST /execute``, and only when started with execution enabled) need
  the token, a CSRF value (the ``fbr_csrf`` cookie equal to the form's ``csrf`` field: double
  submit) and an explicit confirmation field; anything else is refused (403).
- **No secret served**: every response body goes through :func:`executor.safety.redact` (API keys
  registered by the process), and no page renders environment variables.
- Headers: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
  no-referrer``, a content security policy that allows only this origin.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Mapping

from models.errors import ValidationError

TOKEN_COOKIE = "fbr_token"
CSRF_COOKIE = "fbr_csrf"
LOOPBACK_NAMES = ("localhost",)
#: The Host names a loopback dashboard answers (any other is refused: DNS rebinding).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'self'; script-src 'self' 'unsafe-inline' "
                                "'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data:; frame-ancestors 'none'"),
}


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token."""
    if not is_loopback(host) and not token:
        raise ValidationError("--host", f"is {host!r}, which other machines can reach, and no "
                              "token is set", "set FBR_SERVE_TOKEN (or --token) to a long random "
                              "value, or bind 127.0.0.1")
    if token is not None and len(token) < 16:
        raise ValidationError("token", "is shorter than 16 characters",
                              "use a long random value, e.g. `python -c 'import secrets; "
                              "print(secrets.token_urlsafe(24))'`")


def new_secret() -> str:
    """A random URL-safe value (tokens, CSRF values)."""
    return secrets.token_urlsafe(24)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two non-empty strings."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def presented_token(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
    """The token a request carries: the bearer header, else the cookie."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return cookies.get(TOKEN_COOKIE)


def authorised(token: str | None, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
    """True when no token is set, or the request carries it."""
    return token is None or same(presented_token(headers, cookies), token)


def state_change_allowed(token: str | None, headers: Mapping[str, str],
                         cookies: Mapping[str, str], form: Mapping[str, str]) -> str | None:
    """None when a state-changing request may proceed, else why not (one sentence)."""
    if token is None:
        return "execution needs a token: restart fbr serve with --allow-execute and a token"
    if not same(presented_token(headers, cookies), token):
        return "the token is missing or wrong"
    if not same(cookies.get(CSRF_COOKIE), form.get("csrf")):
        return "the CSRF check failed: reload the page and confirm again"
    if form.get("confirm") != "yes":
        return "not confirmed: tick the confirmation box"
    return None
