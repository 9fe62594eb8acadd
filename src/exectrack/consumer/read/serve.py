"""``exectrack-consumer serve``: the read side's HTTP server (uvicorn, run programmatically).

Refuses to start bound to an address other machines can reach without
``EXECTRACK_READ__TOKENS``, or with a token that is empty once white space and
quotes are stripped (``EXECTRACK_READ__TOKENS='""'``) or shorter than
``MIN_TOKEN_LENGTH`` characters (``ServeRefused``, one line naming the setting).
uvicorn's own logging set-up is left out (``log_config=None``): its loggers
(``uvicorn.error``) go through exectrack.consumer.logs like every library's, and
its access log is off; the application logs one ``request`` event per request
instead (exectrack.consumer.read.api), without the query string.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from types import FrameType

import structlog
import uvicorn

from exectrack.consumer.errors import StartupFailed
from exectrack.consumer.read.api import build_app
from exectrack.consumer.settings import Settings

__all__ = ["MIN_TOKEN_LENGTH", "ServeRefused", "check_access", "serve"]

MIN_TOKEN_LENGTH = 16
"""The shortest token ``serve`` accepts (characters, after stripping white space and quotes)."""

log = structlog.get_logger("exectrack.consumer.read.serve")


class ServeRefused(StartupFailed):
    """``serve`` cannot start as configured: open to others without tokens, or the port taken."""

    event = "serve_refused"


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGTERM/SIGINT end it with exit status 0.

    uvicorn re-raises the signal it caught once it has drained (so a default
    handler kills the process, status -15); a requested stop is a clean exit here,
    as for ``consume``.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def check_access(settings: Settings) -> None:
    """Refuse a non-loopback ``EXECTRACK_READ__HOST`` without ``EXECTRACK_READ__TOKENS``,
    and any token that is guessable: empty once white space and quotes are stripped
    (a quoted empty value, ``'""'``), or shorter than ``MIN_TOKEN_LENGTH``.

    Raises:
        ServeRefused: one line naming the settings (never the token).
    """
    read = settings.read
    for position, token in enumerate(read.tokens, start=1):
        bare = token.get_secret_value().strip().strip("\"'").strip()
        if len(bare) < MIN_TOKEN_LENGTH:
            what = "is empty (quotes and white space only)" if not bare else (
                f"has {len(bare)} characters"
            )  # fmt: skip
            raise ServeRefused(
                f"EXECTRACK_READ__TOKENS: token {position} {what}: each token needs at least "
                f"{MIN_TOKEN_LENGTH} characters (e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
    if read.open_to_others and not read.tokens:
        raise ServeRefused(
            f"EXECTRACK_READ__HOST={read.host} lets other machines connect: set "
            "EXECTRACK_READ__TOKENS (bearer tokens) or bind 127.0.0.1"
        )


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, so that a taken port is one line, before uvicorn starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        cause = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise ServeRefused(
            f"serve: cannot listen on {host}:{port}: {cause} "
            "(EXECTRACK_READ__HOST, EXECTRACK_READ__PORT)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> None:
    """Serve ``build_app(settings)`` on ``EXECTRACK_READ__HOST:PORT`` until SIGTERM/SIGINT.

    Raises:
        ServeRefused: see ``check_access``; or the address cannot be bound.
    """
    check_access(settings)
    read = settings.read
    sock = _bind(read.host, read.port)
    config = uvicorn.Config(
        build_app(settings), log_config=None, access_log=False, proxy_headers=True,
        server_header=False, timeout_graceful_shutdown=10,
    )  # fmt: skip
    server = _Server(config)
    shown = f"[{read.host}]" if ":" in read.host else read.host
    log.info(
        "serving", url=f"http://{shown}:{sock.getsockname()[1]}/",
        tokens=len(read.tokens), database=_database(settings),
    )  # fmt: skip
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()


def _database(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    url = settings.read.database_url
    if url is None:
        return settings.database.display_url
    return make_url(url.get_secret_value()).render_as_string(hide_password=True)
