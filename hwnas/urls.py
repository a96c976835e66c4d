"""Storage URLs as they may be shown: a password in one is never printed, logged or stored (no torch, no CLI).

``mask_url`` is applied wherever an Optuna storage URL leaves the process -- error messages, printed commands,
reports, study attributes, sidecars -- so ``postgresql://user:PASSWORD@host/db`` is shown as
``postgresql://user:***@host/db``. A URL without a password comes back unchanged (character for character:
what was recorded before stays comparable).
"""

from __future__ import annotations

import re
from pathlib import Path

MASK = "***"
# password-like query parameters (password=, sslpassword=, passwd=, pwd=), anywhere in the query
_QUERY_SECRET = re.compile(r"(?i)([?&;][^=&;#]*(?:password|passwd|pwd)[^=&;#]*=)[^&;#]*")
# //user:password@ up to the last @ (a password with an unescaped @ is hidden whole)
_USERINFO = re.compile(r"^([^:/?#]+://[^:/?#@]*:).*@")


def mask_url(url: str) -> str:
    """``url`` with its password (``//user:PASSWORD@``, and ``password=`` query parameters) replaced by ``***``;
    SQLAlchemy's own rendering (``render_as_string(hide_password=True)``) when it parses the URL, else a
    pattern. Anything that is not a URL comes back unchanged."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads (or no SQLAlchemy): the pattern
        parsed = None
    if parsed is not None and parsed.password is None:
        masked = url
    elif parsed is not None and "@" not in (parsed.host or ""):
        masked = parsed.render_as_string(hide_password=True)
    else:  # unparsed, or an unescaped @ in the password read as part of the host
        masked = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", url)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, masked)


def url_password(url: str) -> str | None:
    """The password of ``url`` (as written in it, and decoded), or None."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password  # type: ignore[return-value]
    except Exception:
        m = re.match(r"^[^:/?#]+://[^:/?#@]*:(.*)@", url)
        return m.group(1) if m else None


def hide_secrets(text: str, url: str) -> str:
    """``text`` (an error message, say) with ``url`` masked wherever it appears, and its password (and
    password query values) wherever they appear alone: a driver's message may quote them."""
    masked = mask_url(url)
    if masked == url:
        return text
    text = text.replace(url, masked)
    secrets = [url_password(url), *(m.group(0).split("=", 1)[1] for m in _QUERY_SECRET.finditer(url))]
    _, _, raw = url.partition("://")
    m = re.match(r"^[^:/?#@]*:(.*)@", raw)
    if m:
        secrets.append(m.group(1))  # as written (percent-encoded)
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)  # shorter ones would mask innocent words: hardly secrets anyway
    return text


def sqlite_path(storage: str) -> Path | None:
    """The file of an ``sqlite:///PATH`` storage URL (its query, if any, left out), else None."""
    if not storage.startswith("sqlite:///"):
        return None
    return Path(storage.removeprefix("sqlite:///").split("?", 1)[0])
