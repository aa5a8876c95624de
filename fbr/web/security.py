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
- **Cross-site requests** (:func:`cross_site_refusal`): a state-changing request (POST, PUT,
  PATCH, DELETE) is refused (403, nothing run) when its ``Sec-Fetch-Site`` is present and not
  ``same-origin`` (``none``, a typed or bookmarked URL, passes only for GET), or its ``Origin`` is
  present and not the origin the request was addressed to (scheme + Host, default ports and case
  normalised; ``null`` is refused). A request with neither header (curl, scripts) is judged by the
  token, CSRF and Host rules alone.
- **Headers**: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
  same-origin`` (no referrer to another origin; ``no-referrer`` would make browsers send
  ``Origin: null`` with the dashboard's own form) everywhere. The dashboard's own pages: a content
  security policy that allows this origin's script, style sheet and favicon, inline styles
  (plotly's) and, for inline scripts, only the hashes of the page's own chart scripts
  (:func:`page_csp`); no framing, no form target but this origin. Reports (HTML files other
  commands wrote, served as they are) get :data:`REPORT_CSP`: ``sandbox allow-scripts`` without
  ``allow-same-origin``, so their inline plotly runs in an opaque origin that can neither read
  the dashboard's cookies nor call it, and loads nothing from the network.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from models.errors import ValidationError

TOKEN_COOKIE = "fbr_token"
CSRF_COOKIE = "fbr_csrf"
LOOPBACK_NAMES = ("localhost",)
#: The Host names a loopback dashboard answers (any other is refused: DNS rebinding).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: The methods that may change state (the cross-site rules apply to these).
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}
_SITES = {"cross-site": "from another site", "same-site": "from another origin of the same site",
          "none": "from no page (a typed URL or bookmark)"}
#: The dashboard pages' policy without inline scripts (``page_csp`` adds their hashes).
_PAGE_CSP = ("default-src 'none'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; "
             "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
             "frame-ancestors 'none'")
#: A report's policy: an opaque-origin sandbox whose own inline scripts and styles run (plotly
#: inlined), which loads nothing and cannot be framed; downloads kept for plotly's PNG button.
REPORT_CSP = ("sandbox allow-scripts allow-downloads; default-src 'none'; "
              "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
              "img-src data: blob:; font-src data:; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'none'")
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # not no-referrer: under it a browser sends "Origin: null" with the page's own form POST
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": _PAGE_CSP.format(scripts=""),
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


def page_csp(inline_scripts: Iterable[str]) -> str:
    """The dashboard page's policy: the default one, whose ``script-src`` also admits exactly
    ``inline_scripts`` (the texts of the page's own ``<script>`` elements, by SHA-256)."""
    hashes = sorted({base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()
                     for s in inline_scripts})
    return _PAGE_CSP.format(scripts="".join(f" 'sha256-{h}'" for h in hashes))


def normal_origin(scheme: str, netloc: str) -> str | None:
    """``scheme://host:port`` in lower case with the scheme's default port written out (None for
    anything that is not an http(s) origin, e.g. ``null``)."""
    try:
        parts = urlsplit(f"{scheme.lower()}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if (parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query
            or parts.fragment or "@" in parts.netloc):
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port or DEFAULT_PORTS[parts.scheme]}"


def fetch_site_refusal(method: str, headers: Mapping[str, str]) -> str | None:
    """Rule: a state-changing request whose ``Sec-Fetch-Site`` is present must say
    ``same-origin`` (``none``, a typed URL, is not enough to change state). None when allowed,
    else why not."""
    site = headers.get("sec-fetch-site")
    if method.upper() not in STATE_CHANGING or site is None or site.lower() == "same-origin":
        return None
    came = _SITES.get(site.lower(), "from elsewhere")
    return (f"refused: the request came {came} (Sec-Fetch-Site), and state changes come only "
            "from this dashboard's own pages")


def origin_refusal(method: str, headers: Mapping[str, str], own: str | None) -> str | None:
    """Rule: a state-changing request whose ``Origin`` is present must come from ``own`` (the
    origin the request was addressed to), compared after :func:`normal_origin`. None when allowed,
    else why not."""
    origin = headers.get("origin")
    if method.upper() not in STATE_CHANGING or origin is None:
        return None
    given = origin.split("://", 1)
    theirs = normal_origin(given[0], given[1]) if len(given) == 2 else None
    if theirs is not None and own is not None and theirs == own:
        return None
    return (f"refused a request from origin {origin[:100]!r}: state changes come only from "
            "this dashboard's own pages")


def cross_site_refusal(method: str, headers: Mapping[str, str], own: str | None) -> str | None:
    """Rule: a state-changing request passes :func:`fetch_site_refusal` and
    :func:`origin_refusal` (a request with neither header passes both). None when allowed, else
    why not (one sentence)."""
    return fetch_site_refusal(method, headers) or origin_refusal(method, headers, own)
