"""The read side's HTTP API on the real database: every endpoint, 422s, injection, tokens.

Rows are written through the consumer's fold and writer (tests/support/read.py);
what each answer should hold is computed here from ``SEED``, not by the queries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.read.api import build_app
from exectrack.consumer.settings import Settings
from tests.conftest import Topics
from tests.support.kafka import publish
from tests.support.read import (
    HOSTILE_IDS,
    SEED,
    failed_without_end_time,
    hostile_runs,
    seed,
    write_events,
    write_runs,
)

pytestmark = pytest.mark.integration

TERMINAL = {"completed", "failed", "timeout", "cancelled"}


def settings_for(database_url: str, **read: Any) -> Settings:
    return Settings.model_validate({"database": {"url": database_url}, "read": read})


@pytest.fixture
async def seeded(db: AsyncEngine) -> datetime:
    return await seed(db)


async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def client(seeded: datetime, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(settings_for(database_url)):
        yield c


def ids(body: dict[str, Any]) -> set[str]:
    return {item["execution_id"] for item in body["items"]}


def seed_ids(**where: Any) -> set[str]:
    def keep(run: Any) -> bool:
        return all(
            getattr(run, k) in v if isinstance(v, set) else getattr(run, k) == v
            for k, v in where.items()
        )

    return {run.execution_id for run in SEED if keep(run)}


async def test_list_filters_by_several_statuses_and_reports(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/executions", params=[("status", "failed"), ("status", "timeout")])
    assert r.status_code == 200, r.text
    assert ids(r.json()) == seed_ids(status={"failed", "timeout"})
    r = await client.get(
        "/api/executions", params={"report_id": "daily-costs", "trigger_type": "manual"}
    )
    assert ids(r.json()) == seed_ids(report_id="daily-costs", trigger="manual")
    r = await client.get("/api/executions", params={"stuck_for_s": 600})
    assert ids(r.json()) == seed_ids(status="pending")


async def test_list_pages_by_cursor_cover_every_row_once(client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3, "sort": "created_at", "order": "asc"}
    for _ in range(10):
        body = (await client.get("/api/executions", params=params)).json()
        seen += [item["execution_id"] for item in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    by_age = sorted(SEED, key=lambda run: -run.began_min_ago)
    assert seen == [run.execution_id for run in by_age]


async def test_one_execution_with_provenance_and_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/executions/exe-a3")
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["error_details"]["code"]) == ("failed", "QUOTA")
    assert body["provenance"]["error_details"]["event_id"] == "exe-a3-9"
    assert body["provenance"]["start_time"]["event_id"] == "exe-a3-1"
    missing = await client.get("/api/executions/no-such-execution")
    assert missing.status_code == 404
    assert "no-such-execution" in missing.json()["detail"]


async def test_report_stats_and_duration_series(
    client: httpx.AsyncClient, seeded: datetime
) -> None:
    since = (seeded - timedelta(hours=4)).isoformat()
    until = (seeded + timedelta(minutes=1)).isoformat()
    r = await client.get("/api/reports", params={"since": since, "until": until})
    assert r.status_code == 200, r.text
    stats = {s["report_id"]: s for s in r.json()}
    assert set(stats) == {run.report_id for run in SEED}
    daily = stats["daily-costs"]
    runs = [run for run in SEED if run.report_id == "daily-costs"]
    assert daily["total"] == len(runs)
    done = [run for run in runs if run.status in TERMINAL]
    expected_rate = sum(run.status == "completed" for run in done) / len(done)
    assert daily["success_rate"] == pytest.approx(expected_rate)
    assert daily["duration_max_ms"] == max(int(run.duration_s * 1000) for run in done)  # type: ignore[operator]
    assert daily["records_processed"] == sum(run.records or 0 for run in runs)
    series = await client.get(
        "/api/reports/daily-costs/durations",
        params={"since": since, "until": until, "bucket_s": 3600},
    )
    assert series.status_code == 200, series.text
    assert sum(b["count"] for b in series.json()) == len(done)


async def test_stuck(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/stuck", params={"older_than_s": 600})
    assert [x["execution_id"] for x in r.json()] == sorted(seed_ids(status="pending"))


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "bogus"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 100000}, "limit"),
        ({"sort": "name; DROP TABLE report_executions"}, "sort"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"created_from": "2026-11-30T07:00:00"}, "created_from"),  # no offset
        ({"started_by": "1 OR 1=1"}, "started_by"),
        ({"stuck_for_s": -5}, "stuck_for_s"),
    ],
)
async def test_bad_parameters_answer_422_naming_them(
    client: httpx.AsyncClient, params: dict[str, Any], named: str
) -> None:
    r = await client.get("/api/executions", params=params)
    assert r.status_code == 422, r.text
    assert [e["loc"][:2] for e in r.json()["detail"]] == [["query", named]]


async def test_other_endpoints_name_their_bad_parameters(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/reports/daily-costs/durations", params={"bucket_s": 0})
    assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["query", "bucket_s"])
    r = await client.get(
        "/api/reports",
        params={"since": "2026-11-30T00:00:00Z", "until": "2026-11-29T00:00:00Z"},
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][1] in ("since", "until")
    r = await client.get("/api/stuck", params={"older_than_s": 0})
    assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["query", "older_than_s"])


INJECTIONS = [
    "' OR '1'='1",
    "x'); DROP TABLE report_executions; --",
    '" OR ""="',
    "1 UNION SELECT execution_id FROM report_executions",
    "\\' OR 1=1 -- ",
    "%' OR 1=1 #",
]


@pytest.mark.parametrize("value", INJECTIONS)
async def test_sql_injection_strings_are_values(
    client: httpx.AsyncClient, db: AsyncEngine, value: str
) -> None:
    r = await client.get("/api/executions", params={"report_id": value})
    assert (r.status_code, r.json()["items"]) == (200, [])
    in_path = quote(value, safe="")
    assert (await client.get(f"/api/executions/{in_path}")).status_code == 404
    r = await client.get("/api/reports", params={"report_id": value})
    assert (r.status_code, r.json()) == (200, [])
    r = await client.get(f"/api/reports/{in_path}/durations")
    assert (r.status_code, r.json()) == (200, [])
    for name in ("status", "trigger_type", "report_type", "sort", "cursor", "created_from"):
        r = await client.get("/api/executions", params={name: value})
        assert r.status_code == 422, (name, r.text)
    async with db.connect() as conn:
        rows = (await conn.execute(text("SELECT COUNT(*) FROM report_executions"))).scalar()
    assert rows == len(SEED)


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {
        "/api/executions",
        "/api/executions/{execution_id}",
        "/api/reports",
        "/api/reports/{report_id}/durations",
        "/api/stuck",
        "/api/dead-letters",
    } <= set(spec["paths"])
    names = {p["name"] for p in spec["paths"]["/api/executions"]["get"]["parameters"]}
    assert {"status", "report_id", "trigger_type", "created_from", "stuck_for_s", "cursor"} <= names
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "/static/vendor/swagger-ui-5.35.0/swagger-ui-bundle.js" in docs.text
    assert "https://" not in docs.text  # no CDN: users run it behind firewalls
    assert (await client.get("/static/vendor/swagger-ui-5.35.0/swagger-ui.css")).status_code == 200
    assert (await client.get("/healthz")).text == "ok\n"


async def test_loopback_without_tokens_needs_none(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/executions")).status_code == 200
    assert (await client.get("/")).status_code == 200


async def test_tokens_required_when_set(seeded: datetime, database_url: str) -> None:
    settings = settings_for(database_url, tokens="first-token, second-token")
    async for client in client_for(settings):
        r = await client.get("/api/executions")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        bad = {"Authorization": "Bearer nope"}
        assert (await client.get("/api/executions", headers=bad)).status_code == 401
        for token in ("first-token", "second-token"):
            good = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/api/executions", headers=good)).status_code == 200
            assert (await client.get("/", headers=good)).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 401
        assert (await client.get("/docs")).headers["location"] == "/login?next=%2Fdocs"
        page = await client.get("/")
        assert (page.status_code, page.headers["location"]) == (303, "/login?next=%2F")
        refused = await client.get("/login", params={"token": "wrong"})
        assert refused.status_code == 401
        login = await client.get("/login", params={"token": "second-token", "next": "/reports"})
        assert (login.status_code, login.headers["location"]) == (303, "/reports")
        assert "httponly" in login.headers["set-cookie"].lower()
        assert (await client.get("/reports")).status_code == 200  # the cookie, kept by httpx
        for elsewhere in ("//evil.example/", "/\\evil.example/", "https://evil.example/"):
            away = await client.get("/login", params={"token": "first-token", "next": elsewhere})
            assert away.headers["location"] == "/", elsewhere  # no open redirect


async def test_dead_letters(
    client: httpx.AsyncClient, topics: Topics, seeded: datetime, database_url: str
) -> None:
    headers = [("exectrack.dlq.reason", b"bad_json"), ("exectrack.dlq.error", b"not JSON")]
    await publish(topics.bootstrap, topics.dlq, [(b"exe-x", b"{oops", headers)])
    kafka = {"bootstrap_servers": topics.bootstrap, "topic": topics.topic, "dlq_topic": topics.dlq}
    settings = Settings.model_validate({"database": {"url": database_url}, "kafka": kafka})
    async for c in client_for(settings):
        r = await c.get("/api/dead-letters", params={"limit": 5})
        assert r.status_code == 200, r.text
        (letter,) = r.json()
        assert (letter["key"], letter["reason"], letter["detail"]) == (
            "exe-x",
            "bad_json",
            "not JSON",
        )
        assert (await c.get("/api/dead-letters", params={"limit": 0})).status_code == 422
    missing = Settings.model_validate(
        {"database": {"url": database_url}, "kafka": {**kafka, "dlq_topic": "no-such-dlq"}}
    )
    async for c in client_for(missing):
        assert (await c.get("/api/dead-letters")).status_code == 404


def segment(value: str) -> str:
    """An id as one path segment: quoted whole; ``.``/``..`` as ``%2E`` (RFC 3986 clients
    keep them; browsers do not, hence the pages' ``?id=``)."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


@pytest.mark.parametrize("execution_id", HOSTILE_IDS)
async def test_any_id_round_trips_through_the_api(
    client: httpx.AsyncClient, db: AsyncEngine, seeded: datetime, execution_id: str
) -> None:
    await write_runs(db, hostile_runs(), seeded)
    r = await client.get(f"/api/executions/{segment(execution_id)}")
    assert r.status_code == 200, r.text
    assert (r.json()["execution_id"], r.json()["report_id"]) == (execution_id, execution_id)
    since = (seeded - timedelta(hours=1)).isoformat()
    series = await client.get(
        f"/api/reports/{segment(execution_id)}/durations",
        params={"since": since, "bucket_s": 3600},
    )
    assert series.status_code == 200, series.text
    assert sum(b["count"] for b in series.json()) == 1
    listed = await client.get("/api/executions", params={"report_id": execution_id})
    assert ids(listed.json()) == {execution_id}
    missing = execution_id + "/../nope"
    r = await client.get(f"/api/executions/{segment(missing)}")
    assert (r.status_code, r.json()) == (404, {"detail": f"no execution {missing!r}"})


NUMBERS = ["inf", "-inf", "nan", "1e300", "99999999999999999999999", "\u00b2", "-1", "0x10"]
NUMERIC_PARAMETERS = [
    ("/api/executions", "started_by"),
    ("/api/executions", "stuck_for_s"),
    ("/api/executions", "limit"),
    ("/api/reports/daily-costs/durations", "bucket_s"),
    ("/api/stuck", "older_than_s"),
    ("/api/stuck", "limit"),
    ("/api/dead-letters", "limit"),
]


@pytest.mark.parametrize(("path", "name"), NUMERIC_PARAMETERS)
async def test_every_number_is_finite_and_bounded(
    client: httpx.AsyncClient, path: str, name: str
) -> None:
    for value in NUMBERS:
        r = await client.get(path, params={name: value})
        assert r.status_code == 422, (name, value, r.status_code, r.text)
        assert [e["loc"][:2] for e in r.json()["detail"]] == [["query", name]], (value, r.text)


async def test_times_beyond_the_date_range_and_plus_as_space(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/reports", params={"until": "0001-01-01T00:00:00Z"})
    assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["query", "until"])
    r = await client.get("/api/reports/x/durations", params={"until": "0001-01-01T00:00:00Z"})
    assert r.status_code == 422, r.text
    # "+00:00" typed into a URL unencoded arrives as " 00:00"
    r = await client.get("/api/executions?created_from=2026-11-30T00:00:00+00:00")
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["query", "created_from"]
    assert "%2B" in error["msg"]
    r = await client.get("/api/executions?created_from=2026-11-30T00:00:00%2B00:00")
    assert r.status_code == 200, r.text


async def test_failed_without_end_time_is_found_by_last_event(
    client: httpx.AsyncClient, db: AsyncEngine, seeded: datetime
) -> None:
    await write_events(db, failed_without_end_time("exe-noend", seeded))
    today = seeded.replace(hour=0, minute=0, second=0).isoformat()
    r = await client.get("/api/executions", params={"status": "failed", "last_event_from": today})
    assert "exe-noend" in ids(r.json())
    r = await client.get("/api/executions", params={"status": "failed", "ended_from": today})
    assert "exe-noend" not in ids(r.json())  # no end_time: no end range holds it
    until = (seeded - timedelta(days=1)).isoformat()
    r = await client.get("/api/executions", params={"last_event_to": until})
    assert r.json()["items"] == []


async def test_login_keeps_the_whole_view(seeded: datetime, database_url: str) -> None:
    settings = settings_for(database_url, tokens="a-token-of-24-characters")
    views = [
        "/?status=failed&status=timeout&created_from=2026-11-30T07%3A42&report_id=team%2Fd%20c",
        "/reports/r%26next%3D%2F%2Fevil.example?window=7d",
        "/report?id=r%26next%3D%2F%2Fevil.example&window=7d",
        "/execution?id=zz%2F..%2Fone-only",
        "/attention?stuck_min=30",
    ]
    async for client in client_for(settings):
        for view in views:
            asked = await client.get(view)
            assert asked.status_code == 303, view
            location = asked.headers["location"]
            path, _, query = location.partition("?")
            assert path == "/login"
            assert parse_qs(query) == {"next": [view]}, location  # one value, the whole view
            login = await client.get("/login", params={"token": "a-token-of-24-characters",
                                                       "next": view})  # fmt: skip
            assert (login.status_code, login.headers["location"]) == (303, view)
            client.cookies.clear()
        for elsewhere in ("//evil.example/", "/\\evil.example/", "/\t/evil.example",
                          "https://evil.example/", "/\n/evil.example"):  # fmt: skip
            away = await client.get(
                "/login", params={"token": "a-token-of-24-characters", "next": elsewhere}
            )
            assert away.headers["location"] == "/", elsewhere
            client.cookies.clear()
