"""The web page's views without a browser: what each renders from known rows."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import pytest
from markupsafe import escape
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.read.api import build_app
from exectrack.consumer.settings import Settings
from tests.support.read import (
    HOSTILE_IDS,
    SEED,
    failed_without_end_time,
    hostile_runs,
    huge_duration,
    seed,
    write_events,
    write_runs,
)

pytestmark = pytest.mark.integration
NEXT = re.compile(r'<a href="([^"]+)" class="button" id="next">')


@pytest.fixture
async def client(db: AsyncEngine, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    await seed(db)
    app = build_app(Settings.model_validate({"database": {"url": database_url}}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def shown(html: str) -> set[str]:
    return {run.execution_id for run in SEED if f'data-execution="{run.execution_id}"' in html}


async def test_list_filters_from_the_query_string(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert shown(page.text) == {run.execution_id for run in SEED}
    assert 'hx-trigger="every 3s"' in page.text  # the first page refreshes itself
    filtered = await client.get("/", params=[("status", "completed"), ("report_id", "daily-costs")])
    expected = {
        r.execution_id for r in SEED if (r.status, r.report_id) == ("completed", "daily-costs")
    }
    assert shown(filtered.text) == expected
    assert 'value="completed" checked' in filtered.text  # the form shows the URL's filter
    # empty form fields (a GET form sends them all) are no filter
    blank = await client.get("/", params={"report_id": "", "report_type": "", "created_from": ""})
    assert shown(blank.text) == {run.execution_id for run in SEED}
    rows = await client.get("/executions/rows", params={"status": "failed"})
    assert rows.text.lstrip().startswith("<tbody")
    assert 'hx-swap-oob="true"' in rows.text
    assert shown(rows.text) == {r.execution_id for r in SEED if r.status == "failed"}


async def test_pages_follow_the_cursor(client: httpx.AsyncClient) -> None:
    seen: set[str] = set()
    url = "/?limit=3&sort=created_at"
    pages = 0
    while url and pages < 5:
        page = await client.get(url)
        pages += 1
        assert len(shown(page.text) - seen) == len(shown(page.text)), "a row shown twice"
        seen |= shown(page.text)
        found = NEXT.search(page.text)
        url = html.unescape(found.group(1)) if found else ""
    assert pages == -(-len(SEED) // 3)
    assert seen == {run.execution_id for run in SEED}


async def test_bad_filter_is_named(client: httpx.AsyncClient) -> None:
    page = await client.get("/", params={"started_by": "abc"})
    assert page.status_code == 200
    assert "started_by" in page.text.split('id="filter-error"')[1][:200]
    assert shown(page.text) == set()


async def test_execution_detail(client: httpx.AsyncClient) -> None:
    page = await client.get("/execution", params={"id": "exe-a3"})
    assert page.status_code == 200
    assert "quota exceeded on the billing API" in page.text
    assert "exe-a3-9" in page.text  # provenance: the terminal event
    assert "exe-a3-0" in page.text  # the pending event supplied the trigger
    assert (await client.get("/execution", params={"id": "nope"})).status_code == 404
    old = await client.get("/executions/exe-a3")  # the old address redirects
    assert (old.status_code, old.headers["location"]) == (307, "/execution?id=exe-a3")


async def test_report_attention_and_reports(client: httpx.AsyncClient) -> None:
    report = await client.get("/report", params={"id": "daily-costs"})
    assert report.status_code == 200
    daily = [r for r in SEED if r.report_id == "daily-costs"]
    done = [r for r in daily if r.status not in ("pending", "running")]
    rate = sum(r.status == "completed" for r in done) / len(done)
    assert f"{rate * 100:.1f} %" in report.text
    assert 'id="chart-data"' in report.text
    listing = await client.get("/reports", params={"window": "7d"})
    assert all(f">{r.report_id}</a>" in listing.text for r in SEED)
    attention = await client.get("/attention")
    stuck_part, failed_part = attention.text.split("Failed today")
    assert 'href="/execution?id=exe-b3"' in stuck_part  # pending for an hour
    assert 'href="/execution?id=exe-a4"' not in stuck_part  # running, last event 3 min ago
    failed = {r.execution_id for r in SEED if r.status in ("failed", "timeout")}
    assert all(f'href="/execution?id={x}"' in failed_part for x in failed)


async def test_static_assets_are_vendored(client: httpx.AsyncClient) -> None:
    for path in ("/static/app.css", "/static/app.js", "/static/vendor/htmx-2.0.11.min.js",
                 "/static/vendor/uplot-1.6.32.iife.min.js"):  # fmt: skip
        assert (await client.get(path)).status_code == 200, path
    page = (await client.get("/report", params={"id": "daily-costs"})).text
    assert "https://" not in page.split("<main>")[0]  # no CDN in the head


BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(value: str) -> str:
    """What the page must show for ``value``: each bidi control as ``⟨U+XXXX⟩``."""
    return BIDI.sub(lambda m: f"\u27e8U+{ord(m.group()):04X}\u27e9", value)


def link(page: str, row_of: str, kind: str) -> str:
    """The href (unescaped) of the first ``kind`` link in the row ``data-execution=row_of``."""
    row = page.split(f'data-execution="{escape(row_of)}"', 1)[1].split("</tr>", 1)[0]
    found = re.search(rf'href="(/{kind}\?id=[^"]*)"', row)
    assert found, (row_of, row)
    return html.unescape(found.group(1))


def text_of(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page)
    assert found, element_id
    return html.unescape(found.group(1))


@pytest.mark.parametrize("execution_id", HOSTILE_IDS)
async def test_any_id_reaches_its_own_pages(
    client: httpx.AsyncClient, db: AsyncEngine, execution_id: str
) -> None:
    await write_runs(db, hostile_runs(), datetime.now(UTC).replace(microsecond=0))
    listing = (await client.get("/", params={"limit": 100})).text
    assert f'data-execution="{escape(execution_id)}"' in listing
    assert "<script>alert" not in listing  # escaped, never markup
    detail = await client.get(link(listing, execution_id, "execution"))
    assert detail.status_code == 200, detail.text
    assert text_of(detail.text, "execution-id") == visible(execution_id)  # ITS page
    assert not BIDI.search(detail.text)  # no bidi control obeyed anywhere (event ids too)
    # the message is an object: shown as JSON, not as a Python dict
    shown_message = text_of(detail.text, "error-message")
    message = {"code": 7, "what": execution_id}
    assert shown_message == visible(json.dumps(message, sort_keys=True, ensure_ascii=False))
    api = re.search(r'id="api-link">([^<]*)<', detail.text)
    assert api
    body = (await client.get(html.unescape(api.group(1)))).json()
    assert body["execution_id"] == execution_id
    report = await client.get(link(listing, execution_id, "report"))
    assert report.status_code == 200
    assert text_of(report.text, "report-id") == visible(execution_id)
    assert not BIDI.search(report.text)
    assert 'id="success-rate">0.0 %' in report.text  # its one failed execution, not a decoy's
    for tab in re.findall(r'href="(/report\?id=[^"]*window=7d)"', report.text):
        again = await client.get(html.unescape(tab))
        assert text_of(again.text, "report-id") == visible(execution_id)
    # the old addresses still lead there for ids without separators
    if "/" not in execution_id and execution_id not in (".", "..", "rows"):  # rows: the poll
        old = await client.get(f"/executions/{quote(execution_id, safe='')}", follow_redirects=True)
        assert text_of(old.text, "execution-id") == visible(execution_id)


BAD_NUMBERS = ["inf", "nan", "1e300", "99999999999999999999", "\u00b2", "-5", "0", "1.5e3"]
PAGE_NUMBERS = [
    ("/", "limit"),
    ("/", "started_by"),
    ("/", "stuck_for_s"),
    ("/executions/rows", "limit"),
    ("/attention", "stuck_min"),
]


@pytest.mark.parametrize(("path", "name"), PAGE_NUMBERS)
async def test_page_numbers_are_ascii_bounded_and_named(
    client: httpx.AsyncClient, path: str, name: str
) -> None:
    for value in BAD_NUMBERS:
        page = await client.get(path, params={name: value})
        assert page.status_code == 200, (name, value, page.status_code)
        if path == "/executions/rows":  # what the page polls: no rows, no poll (no 500)
            assert "hx-trigger" not in page.text
            assert "data-execution" not in page.text
            continue
        error = text_of(page.text, "filter-error")
        assert f"{name}:" in error, (name, value, error[:300])


async def test_failed_today_counts_failures_without_end_time(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    await write_events(db, failed_without_end_time("exe-noend", datetime.now(UTC)))
    attention = await client.get("/attention")
    failed_part = attention.text.split("Failed today")[1]
    assert 'href="/execution?id=exe-noend"' in failed_part
    as_list = re.search(r'href="(/\?[^"]*)">as a list', failed_part)
    assert as_list
    assert "exe-noend" in shown_ids(await client.get(html.unescape(as_list.group(1))))


def shown_ids(page: httpx.Response) -> set[str]:
    return set(re.findall(r'data-execution="([^"]*)"', page.text))


async def test_durations_and_records_fit_their_cards(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    await write_events(db, huge_duration(now))
    page = (await client.get("/report", params={"id": "huge"})).text
    cards = {
        k: html.unescape(v) for k, v in re.findall(r"<span>([^<]+)</span><b[^>]*>([^<]*)</b>", page)
    }
    assert cards["Longest"] == "> 1 year"
    assert cards["Records"] == "\u2013"  # no execution reported records
    daily = dict(
        re.findall(
            r"<span>([^<]+)</span><b[^>]*>([^<]*)</b>",
            (await client.get("/report", params={"id": "daily-costs"})).text,
        )
    )
    assert daily["Records"] != "\u2013"
