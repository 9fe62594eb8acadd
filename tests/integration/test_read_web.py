"""The web page's views without a browser: what each renders from known rows."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.read.api import build_app
from exectrack.consumer.settings import Settings
from tests.support.read import SEED, seed

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
    page = await client.get("/executions/exe-a3")
    assert page.status_code == 200
    assert "quota exceeded on the billing API" in page.text
    assert "exe-a3-9" in page.text  # provenance: the terminal event
    assert "exe-a3-0" in page.text  # the pending event supplied the trigger
    assert (await client.get("/executions/nope")).status_code == 404


async def test_report_attention_and_reports(client: httpx.AsyncClient) -> None:
    report = await client.get("/reports/daily-costs")
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
    assert 'href="/executions/exe-b3"' in stuck_part  # pending for an hour
    assert 'href="/executions/exe-a4"' not in stuck_part  # running, last event 3 min ago
    failed = {r.execution_id for r in SEED if r.status in ("failed", "timeout")}
    assert all(f'href="/executions/{x}"' in failed_part for x in failed)


async def test_static_assets_are_vendored(client: httpx.AsyncClient) -> None:
    for path in ("/static/app.css", "/static/app.js", "/static/vendor/htmx-2.0.11.min.js",
                 "/static/vendor/uplot-1.6.32.iife.min.js"):  # fmt: skip
        assert (await client.get(path)).status_code == 200, path
    page = (await client.get("/reports/daily-costs")).text
    assert "https://" not in page.split("<main>")[0]  # no CDN in the head
