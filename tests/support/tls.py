"""Throwaway TLS material and free ports for the private servers the tests start.

``tests/faults/secure_broker.py`` (Kafka over SASL_SSL) and
``tests/faults/secure_database.py`` (a TLS-only MariaDB) both need a test CA
and certificates it signs; the openssl recipes live here once.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def make_ca(directory: Path, name: str = "ca") -> Path:
    """A self-signed CA valid for a day: ``<name>.key`` and ``<name>.pem``; returns the PEM."""
    openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN=exectrack-test-{name}")  # fmt: skip
    return directory / f"{name}.pem"


def issue(
    directory: Path, name: str, common_name: str, extensions: str, ca: str = "ca"
) -> tuple[Path, Path]:
    """A certificate signed by ``ca``: ``<name>.pem`` and ``<name>.key``; returns both.

    ``extensions`` is an openssl extension line, e.g. ``subjectAltName=IP:127.0.0.1``."""
    (directory / f"{name}.ext").write_text(extensions + "\n")
    openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={common_name}")  # fmt: skip
    openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem",
            "-CAkey", f"{ca}.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "1",
            "-extfile", f"{name}.ext")  # fmt: skip
    return directory / f"{name}.pem", directory / f"{name}.key"
