"""``exectrack-consumer dlq list|show|redrive`` on the real broker and database (issue #15, 7).

Dead letters are made by the real consume path: a record that is not JSON, one
whose key is not its execution id, and a valid ``completed`` event the database
refused (``db_refused``: its row needs a statement over
``EXECTRACK_DB_MAX_STATEMENT_BYTES``, as behind a proxy with a small packet
limit). The operator then "fixes the cause" (the consumer runs with the default
limit) and redrives the refused one. Expected values come from what the tests
published and from reading the topics from their start, not from the code
under test.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from click.testing import CliRunner, Result
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.cli import main as consumer_cli
from exectrack.consumer.db import migrate
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.dlq.browse import latest_dead_letters, read_dead_letters
from exectrack.consumer.dlq.redrive import Selection, redrive
from exectrack.consumer.kafka import reader
from exectrack.consumer.service import ConsumerService
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.errors import PublishError
from exectrack.producer.events import EventType, execution_event, kafka_headers, to_json
from exectrack.producer.publisher import Publisher
from exectrack.producer.settings import KafkaSettings
from tests.conftest import MakeDatabase, Topics
from tests.support.kafka import Sent, publish, read_all, wait_for_leaders
from tests.support.service import consumer_settings, run_until, table

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
LIMIT = 20_000  # EXECTRACK_DB_MAX_STATEMENT_BYTES while the cause is not fixed
BIG = {"summary": "x" * 40_000}  # a result_summary whose row needs more than LIMIT


@dataclass
class Scene:
    """Topics, a migrated database, what was published, and the dead letters' offsets."""

    topics: Topics
    url: str
    engine: AsyncEngine
    sent: dict[str, Sent]  # by name: ok-N, not-json, mismatch, big
    dead: dict[str, int]  # name -> offset in the (one-partition) DLQ topic

    @property
    def env(self) -> dict[str, str]:
        return {
            "EXECTRACK_KAFKA__BOOTSTRAP_SERVERS": self.topics.bootstrap,
            "EXECTRACK_KAFKA__TOPIC": self.topics.topic,
            "EXECTRACK_KAFKA__DLQ_TOPIC": self.topics.dlq,
            "EXECTRACK_DATABASE__URL": self.url,
            "EXECTRACK_GROUP_ID": self.topics.group_id,
            "EXECTRACK_LOG_FORMAT": "json",
        }

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=self.topics.bootstrap, topic=self.topics.topic,
            dlq_topic=self.topics.dlq,
        )  # fmt: skip


def big_event() -> Any:
    return execution_event(
        EventType.COMPLETED, execution_id="big", report_id="rep", source="/tests",
        id="big-done", sequence=2, time=T0, end_time=T0, records_processed=7,
        result_summary=BIG,
    )  # fmt: skip


def small_event(n: int) -> Any:
    return execution_event(
        EventType.COMPLETED, execution_id=f"ok-{n}", report_id="rep", source="/tests",
        id=f"ok-{n}-done", sequence=2, time=T0, end_time=T0, records_processed=n,
    )  # fmt: skip


def message(event: Any) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return event.key, to_json(event), kafka_headers(event)


@pytest.fixture
async def scene(topics: Topics, new_database: MakeDatabase) -> AsyncIterator[Scene]:
    url = await new_database()
    await migrate.upgrade(url)
    engine = create_engine(DatabaseSettings(), url=url)
    mismatch = small_event(99)
    named = {
        "ok-1": message(small_event(1)),
        "not-json": (b"nj-1", b"{not json", [("x-trace", b"t-1")]),
        "big": message(big_event()),
        "mismatch": (b"other-key", to_json(mismatch), kafka_headers(mismatch)),
        "ok-2": message(small_event(2)),
    }
    sent = dict(
        zip(named, await publish(topics.bootstrap, topics.topic, named.values()), strict=True)
    )
    settings = consumer_settings(topics, url, db_max_statement_bytes=LIMIT)
    totals = await run_until(ConsumerService(settings, engine=engine), len(named))
    assert (totals.records, totals.dead_lettered) == (len(named), 3)
    by_source = {}
    for record in await read_all(topics.bootstrap, topics.dlq):
        headers = dict(record.headers)
        source = (int(headers["exectrack.dlq.partition"]), int(headers["exectrack.dlq.offset"]))
        by_source[source] = record.offset
    dead = {name: by_source[(s.partition, s.offset)] for name, s in sent.items() if name in
            ("not-json", "big", "mismatch")}  # fmt: skip
    assert len(by_source) == 3
    try:
        yield Scene(topics, url, engine, sent, dead)
    finally:
        await engine.dispose()


def cli(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(consumer_cli, args, env=env, catch_exceptions=False)


async def run(scene: Scene, *args: str) -> Result:
    return await asyncio.to_thread(cli, list(args), scene.env)


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = reader(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def redrive_rows(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text(
                        "SELECT dlq_topic, dlq_partition, dlq_offset, reason, record_key, "
                        "redriven_at IS NOT NULL, target_topic, target_partition, target_offset "
                        "FROM dead_letter_redrives ORDER BY dlq_partition, dlq_offset"
                    )
                )
            ).all()
        )


# ---------------------------------------------------------------- list and show
async def test_list_shows_the_latest_dead_letters_newest_first(scene: Scene) -> None:
    listed = await run(scene, "dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    letters = json.loads(listed.output)
    # newest first: the DLQ has one partition, so the highest offset first
    expected = sorted(scene.dead.items(), key=lambda item: -item[1])
    assert [(x["partition"], x["offset"]) for x in letters] == [(0, o) for _, o in expected]
    for letter in letters:
        name = next(n for n, o in scene.dead.items() if o == letter["offset"])
        original = scene.sent[name]
        assert letter["topic"] == scene.topics.dlq
        assert letter["reason"] == {"not-json": "not_json", "big": "db_refused",
                                    "mismatch": "key_mismatch"}[name]  # fmt: skip
        assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
            scene.topics.topic, original.partition, original.offset,
        )  # fmt: skip
        assert letter["key"] == (original.key or b"").decode()
        assert letter["value_bytes"] == len(original.value or b"")
        assert letter["truncated"] is None
        assert letter["detail"]
    big = next(x for x in letters if x["reason"] == "db_refused")
    assert f"over the {LIMIT}-byte limit" in big["detail"]

    only = await run(scene, "dlq", "list", "--reason", "db_refused")
    assert only.exit_code == 0, only.output
    lines = only.output.splitlines()
    assert lines[0].split()[:3] == ["PARTITION:OFFSET", "DEAD-LETTERED", "REASON"]
    assert len(lines) == 3  # header, one row, the count line
    assert lines[1].startswith(f"0:{scene.dead['big']} ")
    assert " big " in lines[1]
    assert (
        f"{scene.topics.topic}:{scene.sent['big'].partition}:{scene.sent['big'].offset}" in lines[1]
    )

    one = await run(scene, "dlq", "list", "--limit", "1", "--json")
    assert [x["offset"] for x in json.loads(one.output)] == [max(scene.dead.values())]
    none = await run(scene, "dlq", "list", "--reason", "too_large")
    assert none.output.strip() == f"no dead letters with reason too_large in {scene.topics.dlq}"


async def test_show_prints_one_dead_letter_in_full(scene: Scene) -> None:
    offset = scene.dead["not-json"]
    shown = await run(scene, "dlq", "show", f"{scene.topics.dlq}:0:{offset}")
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert f"dead letter  {scene.topics.dlq}:0:{offset}" in out
    assert "reason       not_json" in out
    assert "headers (the record's own): 1\n  x-trace: t-1" in out
    assert "exectrack.dlq.reason: not_json" in out
    assert out.rstrip().endswith("value (9 bytes):\n{not json")
    assert "key (4 bytes):\nnj-1" in out

    as_json = await run(scene, "dlq", "show", "--partition", "0", "--offset", str(offset), "--json")
    found = json.loads(as_json.output)
    assert found["value"] == {"bytes": 9, "text": "{not json", "hex": None}
    assert found["key"]["text"] == "nj-1"
    assert {"name": "x-trace", "bytes": 3, "text": "t-1", "hex": None} in found["headers"]

    missing = await run(scene, "dlq", "show", "0:999")
    assert missing.exit_code == 1
    assert f"no record at {scene.topics.dlq}:0:999" in missing.output
    bad = await run(scene, "dlq", "show", "zero:one")
    assert bad.exit_code == 2


async def test_show_prints_bytes_that_are_not_text_as_hex(scene: Scene) -> None:
    """A dead letter crafted by hand with the real headers and a binary value."""
    value = bytes(range(250, 256)) + b"\x00ab"
    (made,) = await publish(scene.topics.bootstrap, scene.topics.dlq, [
        (b"bin-1", value, [("exectrack.dlq.reason", b"not_utf8"), ("ce_id", b"\xff\xfe")]),
    ])  # fmt: skip
    shown = await run(scene, "dlq", "show", f"0:{made.offset}")
    assert shown.exit_code == 0, shown.output
    assert "value (9 bytes):\n(9 bytes, not UTF-8 text)\n00000000  fa fb fc fd fe ff 00 61 62" in (
        shown.output
    )
    assert "  ce_id: 0xfffe" in shown.output
    found = json.loads((await run(scene, "dlq", "show", f"0:{made.offset}", "--json")).output)
    assert found["value"] == {"bytes": 9, "text": None, "hex": value.hex()}


# ---------------------------------------------------------------- redrive
async def test_redrive_dry_run_apply_and_never_twice(scene: Scene) -> None:
    topic, parts = scene.topics.topic, scene.topics.partitions
    before = await end_offsets(scene.topics.bootstrap, topic, parts)
    assert "big" not in await table(scene.engine)

    dry = await run(scene, "dlq", "redrive", "--reason", "db_refused")
    assert dry.exit_code == 0, dry.output
    assert dry.output.split()[:3] == ["would_send", f"0:{scene.dead['big']}", "key=big"]
    assert "dry run (nothing sent; --apply sends): 1 dead letters chosen" in dry.output
    assert await end_offsets(scene.topics.bootstrap, topic, parts) == before
    assert await redrive_rows(scene.engine) == []

    applied = await run(scene, "dlq", "redrive", "--reason", "db_refused", "--apply", "--json")
    assert applied.exit_code == 0, applied.output
    summary = json.loads(applied.output)
    assert summary["counts"] == {"sent": 1}
    big = scene.sent["big"]
    after = await end_offsets(scene.topics.bootstrap, topic, parts)
    assert after == {**before, big.partition: before[big.partition] + 1}  # same key, same partition
    target = summary["letters"][0]["target"]
    assert target == {"topic": topic, "partition": big.partition, "offset": before[big.partition]}
    # the copy is the original record: key, value and headers, no exectrack.dlq.* header
    copy = next(r for r in await read_all(scene.topics.bootstrap, topic)
                if (r.partition, r.offset) == (big.partition, target["offset"]))  # fmt: skip
    assert (copy.key, copy.value, list(copy.headers)) == (big.key, big.value, big.headers)
    assert await redrive_rows(scene.engine) == [(
        scene.topics.dlq, 0, scene.dead["big"], "db_refused", "big", 1, topic, big.partition,
        before[big.partition],
    )]  # fmt: skip

    # the cause is fixed (the default statement limit): the consumer folds the copy
    fixed = consumer_settings(scene.topics, scene.url)
    await run_until(ConsumerService(fixed, engine=scene.engine), 1)
    row = (await table(scene.engine))["big"]
    assert (row["status"], row["result_summary"], row["records_processed"]) == (
        "completed", BIG, 7,
    )  # fmt: skip

    again = await run(scene, "dlq", "redrive", "--reason", "db_refused", "--apply")
    assert again.exit_code == 0, again.output
    assert again.output.split()[:3] == ["already_redriven", f"0:{scene.dead['big']}", "key=big"]
    assert f"-> {topic}:{big.partition}:{before[big.partition]}" in again.output
    every = await run(scene, "dlq", "redrive", "--all")  # a dry run: says what was done
    assert "1 already_redriven, 2 would_send" in every.output
    assert await end_offsets(scene.topics.bootstrap, topic, parts) == after


async def test_redrive_chooses_by_offset_and_key(scene: Scene) -> None:
    by_offset = await run(
        scene, "dlq", "redrive", "--offset", str(scene.dead["mismatch"]), "--json"
    )
    found = json.loads(by_offset.output)["letters"]
    assert [(x["offset"], x["reason"], x["outcome"]) for x in found] == [
        (scene.dead["mismatch"], "key_mismatch", "would_send")
    ]
    low, high = sorted(scene.dead.values())[:2]
    ranged = json.loads((await run(scene, "dlq", "redrive", "--offset", f"{low}-{high}",
                                   "--json")).output)  # fmt: skip
    assert [x["offset"] for x in ranged["letters"]] == [low, high]
    by_key = json.loads((await run(scene, "dlq", "redrive", "--key", "nj-1", "--json")).output)
    assert [x["offset"] for x in by_key["letters"]] == [scene.dead["not-json"]]
    nothing = await run(scene, "dlq", "redrive")
    assert nothing.exit_code == 2
    assert "choose dead letters" in nothing.output
    wrong = await run(scene, "dlq", "redrive", "--all", "--partition", "5")
    assert wrong.exit_code == 1
    assert "partition: [5] not in topic" in wrong.output


async def test_concurrent_redrives_send_each_letter_once(scene: Scene) -> None:
    topic, parts = scene.topics.topic, scene.topics.partitions
    before = await end_offsets(scene.topics.bootstrap, topic, parts)
    chosen = Selection(reasons=frozenset({"db_refused", "not_json"}))
    first, second = await asyncio.gather(
        redrive(scene.engine, scene.kafka, chosen, apply=True, identity="a@test"),
        redrive(scene.engine, scene.kafka, chosen, apply=True, identity="b@test"),
    )
    sent = [i for s in (first, second) for i in s.items if i.outcome == "sent"]
    assert sorted(i.letter.offset for i in sent) == sorted(
        (scene.dead["big"], scene.dead["not-json"])
    )
    after = await end_offsets(scene.topics.bootstrap, topic, parts)
    assert sum(after.values()) - sum(before.values()) == 2
    assert len(await redrive_rows(scene.engine)) == 2


async def test_a_failed_send_frees_the_letter_and_an_unconfirmed_claim_is_skipped(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = Selection(reasons=frozenset({"db_refused"}))
    original = Publisher.publish_raw

    async def refused(*_: Any, **__: Any) -> Any:
        raise PublishError("broker said no (injected)")

    monkeypatch.setattr(Publisher, "publish_raw", refused)
    failed = await redrive(scene.engine, scene.kafka, chosen, apply=True)
    assert [(i.outcome, i.detail) for i in failed.items] == [
        ("failed", "not sent: broker said no (injected)")
    ]
    assert not failed.ok
    assert await redrive_rows(scene.engine) == []  # the claim was deleted: try again later

    # a claim left by a redrive killed between the send and the record
    monkeypatch.setattr(Publisher, "publish_raw", original)
    async with scene.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO dead_letter_redrives (dlq_topic, dlq_partition, dlq_offset, "
                "claimed_at, claimed_by) VALUES (:t, 0, :o, NOW(6), 'killed@test')"
            ),
            {"t": scene.topics.dlq, "o": scene.dead["big"]},
        )
    skipped = await run(scene, "dlq", "redrive", "--reason", "db_refused", "--apply")
    assert skipped.exit_code == 0, skipped.output
    assert skipped.output.split()[:2] == ["unconfirmed", f"0:{scene.dead['big']}"]
    assert "by killed@test" in skipped.output
    retried = await redrive(scene.engine, scene.kafka, chosen, apply=True, retry_unconfirmed=True)
    assert [i.outcome for i in retried.items] == ["sent"]
    ((*_, done, target_topic, _, _),) = await redrive_rows(scene.engine)
    assert (done, target_topic) == (1, scene.topics.topic)


# ---------------------------------------------------------------- the library, more partitions
@pytest.fixture
async def dlq3(topics: Topics) -> AsyncIterator[str]:
    name = f"exectrack-dlq3-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
        await wait_for_leaders(topics.bootstrap, [name])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def test_latest_across_partitions_reads_back_in_windows(topics: Topics, dlq3: str) -> None:
    """400 letters over 3 partitions (more than one window each); one rare reason."""
    letters = [
        (f"k{n}".encode(), f"v{n}".encode(),
         [("exectrack.dlq.reason", b"db_refused" if n % 97 == 0 else b"not_json")])
        for n in range(400)
    ]  # fmt: skip
    await publish(topics.bootstrap, dlq3, letters)
    kafka = KafkaSettings(bootstrap_servers=topics.bootstrap, dlq_topic=dlq3)
    everything = await read_all(topics.bootstrap, dlq3)
    newest = sorted(everything, key=lambda r: (r.timestamp, r.partition, r.offset), reverse=True)

    got = await latest_dead_letters(kafka, limit=30)
    assert [(g.partition, g.offset) for g in got] == [(r.partition, r.offset) for r in newest[:30]]
    rare = await latest_dead_letters(kafka, limit=3, reason="db_refused")
    expected = [r for r in newest if dict(r.headers)["exectrack.dlq.reason"] == b"db_refused"]
    assert [g.key for g in rare] == [r.key.decode() for r in expected[:3]]
    assert len(await latest_dead_letters(kafka, limit=1000)) == 400
    few = await latest_dead_letters(kafka, limit=1000, scan_limit=100)
    assert 99 <= len(few) <= 105  # reading stopped after the scan limit (in whole windows)
    ranged = await read_dead_letters(kafka, {1: (5, 9)})
    assert [(r.partition, r.offset) for r in ranged] == [(1, o) for o in range(5, 9)]
    with pytest.raises(ValueError, match="limit"):
        await latest_dead_letters(kafka, limit=0)


async def test_letters_that_cannot_be_redriven_are_skipped_with_why(scene: Scene) -> None:
    """Hand-made letters with the real headers: cut to fit, from another topic, not
    exectrack's, a null value. Even --apply sends none of them."""
    reason = ("exectrack.dlq.reason", b"db_refused")
    made = await publish(scene.topics.bootstrap, scene.topics.dlq, [
        (b"cut", b"{", [reason, ("exectrack.dlq.truncated", b"true; value=2000000/900000"),
                        ("exectrack.dlq.topic", scene.topics.topic.encode()),
                        ("exectrack.dlq.partition", b"3"), ("exectrack.dlq.offset", b"77")]),
        (b"elsewhere", b"{}", [reason, ("exectrack.dlq.topic", b"another-topic")]),
        (b"foreign", b"{}", [("content-type", b"application/json")]),
        (b"null", None, [reason]),
    ])  # fmt: skip
    topic, parts = scene.topics.topic, scene.topics.partitions
    before = await end_offsets(scene.topics.bootstrap, topic, parts)
    first = str(made[0].offset)
    result = await run(scene, "dlq", "redrive", "--offset", f"{first}-", "--apply", "--json")
    assert result.exit_code == 0, result.output
    letters = json.loads(result.output)["letters"]
    assert [(x["key"], x["outcome"]) for x in letters] == [
        ("cut", "truncated"), ("elsewhere", "other_topic"), ("foreign", "not_a_dead_letter"),
        ("null", "null_value"),
    ]  # fmt: skip
    assert f"the original is at {topic}:3:77" in letters[0]["detail"]
    assert "dead-lettered from another-topic" in letters[1]["detail"]
    assert await end_offsets(scene.topics.bootstrap, topic, parts) == before
    assert await redrive_rows(scene.engine) == []
