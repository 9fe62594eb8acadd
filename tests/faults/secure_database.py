"""A private MariaDB that only accepts TLS, for the database TLS scenario.

Started like deploy/local/stack.sh starts its instance (``mariadb-install-db``
then ``mariadbd --defaults-file``), but with its own data directory under the
test's temporary directory, its own socket and a free port, and a throwaway CA
and server certificate (openssl; SAN ``IP:127.0.0.1`` and ``DNS:localhost``).
``require_secure_transport=ON`` refuses any TCP connection without TLS, and
the application user is created ``REQUIRE SSL`` as well. It never touches the
deploy/local instance. Root is the OS user through the unix socket (no password).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.tls import free_port, issue, make_ca

USER, PASSWORD, DATABASE = "exectrack_tls", "tls-Only-For-This-Test-7c1e", "exectrack_tls"
TOOLS = ("mariadbd", "mariadb-install-db", "mariadb")


@dataclass(frozen=True)
class SecureDatabase:
    host: str
    port: int
    cafile: str  # the CA that signed the server certificate
    wrong_cafile: str  # another CA: verification against it must fail
    client_cert: str  # a client certificate signed by the CA (mutual TLS)
    client_key: str
    defaults_file: str  # root access through the socket: `mariadb --defaults-file=...`

    def url(self, password: str = PASSWORD) -> str:
        return f"mysql+aiomysql://{USER}:{password}@{self.host}:{self.port}/{DATABASE}"

    def sql(self, statement: str) -> str:
        """Run SQL as root through the unix socket; its tab-separated output."""
        done = subprocess.run(
            [_tool("mariadb"), f"--defaults-file={self.defaults_file}", "--batch",
             "--skip-column-names", "-e", statement],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return done.stdout


def _tool(name: str) -> str:
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/usr/bin"]:
        candidate = Path(directory) / name
        if directory and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(name)


def available() -> str | None:
    """Why the database cannot be started here, or None."""
    if shutil.which("openssl") is None:
        return "no openssl on PATH"
    for tool in TOOLS:
        try:
            _tool(tool)
        except FileNotFoundError:
            return f"no {tool} (install mariadb-server, or run deploy/local/stack.sh up once)"
    return None


def _certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate it signs, a client certificate, and an unrelated CA."""
    for ca in ("ca", "wrong-ca"):
        make_ca(directory, ca)
    issue(directory, "server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    issue(directory, "client", USER, "extendedKeyUsage=clientAuth")
    names = ("ca.pem", "wrong-ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    return {name: directory / name for name in names}


@contextmanager
def secure_database(directory: Path) -> Iterator[SecureDatabase]:
    """Start the TLS-only instance in ``directory``; stop it on exit, whatever happened."""
    certs = _certificates(directory)
    port = free_port()
    data = directory / "data"
    # a unix socket path is limited to ~107 bytes: keep it short
    sock = Path(tempfile.mkdtemp(prefix="exectrack-tls-db-")) / "mysqld.sock"
    cnf = directory / "my.cnf"
    cnf.write_text(
        "\n".join([
            "[client]",
            f"socket = {sock}",
            "[mysqld]",
            "bind-address = 127.0.0.1",
            f"port = {port}",
            f"socket = {sock}",
            f"datadir = {data}",
            f"pid-file = {directory / 'mariadbd.pid'}",
            f"log-error = {directory / 'error.log'}",
            "skip-name-resolve",
            "character-set-server = utf8mb4",
            "collation-server = utf8mb4_unicode_ci",
            "default-time-zone = '+00:00'",
            "transaction_isolation = READ-COMMITTED",
            "innodb_buffer_pool_size = 64M",
            "innodb_log_file_size = 16M",
            f"ssl_ca = {certs['ca.pem']}",
            f"ssl_cert = {certs['server.pem']}",
            f"ssl_key = {certs['server.key']}",
            "require_secure_transport = ON",
        ]) + "\n"
    )  # fmt: skip
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run(
        [_tool("mariadb-install-db"), f"--defaults-file={cnf}",
         "--auth-root-authentication-method=socket", f"--user={_user()}",
         "--skip-test-db", "--skip-name-resolve"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    with (directory / "mariadbd.out").open("wb") as out:
        proc = subprocess.Popen(
            [_tool("mariadbd"), f"--defaults-file={cnf}", *as_root],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        found = SecureDatabase(
            "127.0.0.1", port, str(certs["ca.pem"]), str(certs["wrong-ca.pem"]),
            str(certs["client.pem"]), str(certs["client.key"]), str(cnf),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the TLS MariaDB exited: see {directory / 'error.log'}")
            try:
                found.sql("SELECT 1")
                break
            except subprocess.SubprocessError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the TLS MariaDB did not answer within 60 s") from None
                time.sleep(0.3)
        statements = [f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4"]
        for host in ("127.0.0.1", "localhost"):
            account = f"'{USER}'@'{host}'"
            statements += [
                f"CREATE USER {account} IDENTIFIED BY '{PASSWORD}' REQUIRE SSL",
                f"GRANT ALL PRIVILEGES ON `{DATABASE}%`.* TO {account}",
            ]
        found.sql("; ".join(statements))
        yield found
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(sock.parent, ignore_errors=True)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name
