"""A private Kafka broker with one SASL_SSL (SCRAM-SHA-512) listener, for the security scenario.

Started from the jars deploy/local/stack.sh caches (``$EXECTRACK_CACHE_DIR``),
on free ports, with its own data directory, a throwaway CA and broker
certificate (openssl), and one SCRAM user created at format time. It never
touches the deploy/local broker. Inter-broker and controller traffic use
loopback PLAINTEXT listeners (a single node talks to itself).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.tls import free_port, issue, make_ca

KAFKA_VERSION = os.environ.get("EXECTRACK_KAFKA_VERSION", "4.1.1")
CACHE = Path(
    os.environ.get("EXECTRACK_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "exectrack"
)
LIBS = CACHE / f"kafka-{KAFKA_VERSION}" / "libs"
USER, PASSWORD = "exectrack-consumer", "s3cret-Only-For-This-Test"


@dataclass(frozen=True)
class SecureBroker:
    bootstrap: str
    cafile: str


def available() -> str | None:
    """Why the broker cannot be started here, or None."""
    for tool in ("java", "openssl"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH"
    if not any(LIBS.glob("kafka_2.13-*.jar")):
        return f"no Kafka jars in {LIBS} (run deploy/local/stack.sh up once)"
    return None


def _certificates(directory: Path) -> tuple[Path, Path]:
    """(CA certificate, broker key + certificate in one PEM file)."""
    ca = make_ca(directory)
    cert, key = issue(directory, "broker", "127.0.0.1", "subjectAltName=IP:127.0.0.1")
    keystore = directory / "broker-keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text())
    return ca, keystore


@contextmanager
def secure_broker(directory: Path) -> Iterator[SecureBroker]:
    cafile, keystore = _certificates(directory)
    client, internal, controller = free_port(), free_port(), free_port()
    props = directory / "server.properties"
    props.write_text(
        "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"listeners=SASL_SSL://127.0.0.1:{client},INTERNAL://127.0.0.1:{internal},"
            f"CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{client},INTERNAL://127.0.0.1:{internal}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=INTERNAL",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
            f"log.dirs={directory / 'data'}",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
        ]) + "\n"
    )  # fmt: skip
    java = ["java", "-Xmx512m", "-cp", f"{LIBS}/*"]
    tool = [*java, "kafka.tools.StorageTool"]
    cluster = subprocess.run([*tool, "random-uuid"], check=True, capture_output=True, text=True)
    subprocess.run(
        [*tool, "format", "--standalone", "-t", cluster.stdout.strip().splitlines()[-1], "-c",
         str(props), "--add-scram", f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"],
        check=True, capture_output=True,
    )  # fmt: skip
    with (directory / "kafka.out").open("wb") as out:
        proc = subprocess.Popen([*java, "kafka.Kafka", str(props)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the secure broker exited: see {directory / 'kafka.out'}")
            try:
                socket.create_connection(("127.0.0.1", client), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the secure broker did not listen within 90 s") from None
                time.sleep(0.5)
        yield SecureBroker(f"127.0.0.1:{client}", str(cafile))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
