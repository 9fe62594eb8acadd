"""What the HTTP API and the web page share: the request's context and who may read.

Access (docs/read/api.md, "Access"): with no ``EXECTRACK_READ__TOKENS`` every
request is served (``serve`` refuses to bind a non-loopback address then, so
only this machine can ask). With tokens, every request but ``/healthz``,
``/livez``, ``/login`` and ``/static`` needs one of them, as
``Authorization: Bearer <token>`` or as the ``exectrack_token`` cookie that
``GET /login?token=<token>`` sets (so a browser can open the pages, and the
pages' own polling is authorised). Tokens are compared in constant time, each
of them, whatever the first comparisons gave. Every endpoint is a read-only GET,
so a cross-site request can change nothing; the cookie is ``HttpOnly`` and
``SameSite=Strict`` all the same.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.settings import Settings

__all__ = [
    "COOKIE",
    "OPEN_PATHS",
    "ReadContext",
    "bad_parameter",
    "context",
    "not_found",
    "presented_token",
    "token_ok",
]

COOKIE = "exectrack_token"
"""The cookie ``/login`` sets: the token itself (HttpOnly, SameSite=Strict)."""
OPEN_PATHS = ("/healthz", "/livez", "/login", "/static/")
"""Paths served without a token (prefixes): probes, the login form, CSS and scripts."""


@dataclass(frozen=True)
class ReadContext:
    """What a request handler needs: the settings and the read database's engine."""

    settings: Settings
    engine: AsyncEngine


def context(request: Request) -> ReadContext:
    """The ``ReadContext`` that ``build_app``'s lifespan put on the application."""
    found: ReadContext = request.app.state.read
    return found


def token_ok(given: str | None, settings: Settings) -> bool:
    """Whether ``given`` is one of ``EXECTRACK_READ__TOKENS`` (True when none is set).

    Every token is compared (``hmac.compare_digest``), so the time taken does not
    tell which token, or how much of one, matched.
    """
    tokens = settings.read.tokens
    if not tokens:
        return True
    if not given:
        return False
    candidate = given.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(candidate, token.get_secret_value().encode())
    return matched


def presented_token(request: Request) -> str | None:
    """The token a request carries: ``Authorization: Bearer <t>``, else the cookie."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE)


def bad_parameter(name: str, message: str, value: Any = None) -> RequestValidationError:
    """A 422 answer naming the query parameter ``name``, in FastAPI's own error shape.

    ``{"detail": [{"type": "value_error", "loc": ["query", name], "msg": ...}]}``.
    """
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}]
    )


def not_found(what: str) -> HTTPException:
    """A 404 answer: ``{"detail": "no <what>"}``."""
    return HTTPException(status_code=404, detail=f"no {what}")
