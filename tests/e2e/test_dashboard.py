"""The dashboard in a real browser: Debian's Chromium, driven through every page of a hub that
`liandong up --demo` runs (embedded broker, worker, API on PostgreSQL) and the simulator feeds.

The simulator plays January and February 2022 and is then stopped, so the figures hold still while
the pages are compared with the API's own numbers. Screenshots of every page go to
tests/artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook  # type: ignore[import-untyped]
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from services.embedded_broker import free_port
from tests.support import REPO, create_pg_database, drop_pg_database, liandong, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
# A Chinese browser. The context's locale sets what scripts see (navigator.language, Intl); date
# inputs, though, are drawn in Chromium's own UI language (年/月/日 rather than mm/dd/yyyy). On
# Linux that comes from LANGUAGE/LANG, not --lang, and needs Debian's chromium-l10n for zh-CN.
CHROMIUM_ZH_CN = Path("/usr/lib/chromium/locales/zh-CN.pak")
CHROMIUM_ENV = {"LANGUAGE": "zh_CN:zh", "LANG": "zh_CN.UTF-8"}
CHROMIUM_ARGS = [
    "--lang=zh-CN",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = REPO / "tests" / "artifacts" / "screenshots"
# Two simulated months: January's stalled loops have escalated by then, and the year would take minutes.
SLICE_END = "2022-03-01"
DEMO_MINUTES = "1.5"
OFFICE = "shilou.enforcement-office"
OFFICE_TOWNSHIP = ("shilou", "石楼镇")
OTHER_TOWNSHIP = ("shiqiao", "市桥街道")
PHONE = {"width": 390, "height": 844}


@dataclass
class DemoHub:
    origin: str
    login_url: str
    supervisor_key: str
    office_key: str
    log: Path
    process: subprocess.Popen[bytes]
    client: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=30))

    async def api(self, path: str, key: str | None = None, **params: Any) -> Any:
        """What the API answers the same viewer: the numbers the pages must show."""
        response = await self.client.get(
            self.origin + path,
            params={k: v for k, v in params.items() if v is not None},
            headers={"Authorization": f"Bearer {key or self.supervisor_key}"},
        )
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
        return response.json()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self) -> list[int]:
        return sorted({int(p) for p in re.findall(r"pid (\d+)", self.output())})


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard tests drive Debian's Chromium. "
            "Install it with: apt-get install chromium chromium-l10n",
            pytrace=False,
        )
    if not CHROMIUM_ZH_CN.exists():
        pytest.fail(
            f"{CHROMIUM_ZH_CN} is missing: the dashboard is tested in a Chinese browser, and without "
            "it Chromium draws date fields as mm/dd/yyyy. Install it with: apt-get install chromium-l10n",
            pytrace=False,
        )


async def _start_demo(tmp: Path, database_url: str) -> tuple[subprocess.Popen[bytes], dict[str, str], Path]:
    env = {
        "LIANDONG_DATA_DIR": str(tmp / "data"),
        "LIANDONG_API_PORT": str(free_port()),
        "LIANDONG_WORKER_WEB_PORT": str(free_port()),
        "LIANDONG_KAFKA_BOOTSTRAP": "",
        "LIANDONG_DATABASE_URL": database_url,
    }
    log = tmp / "up.log"
    process = liandong(
        "up",
        "--demo",
        "--demo-minutes",
        DEMO_MINUTES,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, env, log


@pytest.fixture(scope="module")
async def hub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DemoHub]:
    _require_chromium()
    tmp = tmp_path_factory.mktemp("dashboard")
    database_url = await create_pg_database()
    process, env, log = await _start_demo(tmp, database_url)

    def output() -> str:
        return log.read_text(errors="replace")

    async def login_line() -> re.Match[str] | None:
        if process.poll() is not None:
            raise AssertionError(f"liandong up --demo exited early:\n{output()[-3000:]}")
        return re.search(r"demo: open (http://\S+/dashboard/#login=(ld_\S+)) to sign in", output())

    demo: DemoHub | None = None
    try:
        login = await wait_for(login_line, 90, "`liandong up --demo` to print the dashboard's sign-in link")

        async def simulator_line() -> re.Match[str] | None:
            # Printed just after the sign-in link, once the simulator has started.
            return re.search(r"demo: simulating \d+ in about [\d.]+ min, pid (\d+)", output())

        simulator = await wait_for(simulator_line, 30, "`liandong up --demo` to start the simulator")
        clock = tmp / "data" / "demo-clock.txt"

        async def slice_played() -> bool:
            return clock.exists() and clock.read_text() >= SLICE_END

        await wait_for(slice_played, 120, f"the simulated clock to reach {SLICE_END}", interval_s=0.2)
        os.kill(int(simulator.group(1)), signal.SIGTERM)  # the rest of the year is not needed

        async def simulator_gone() -> bool:
            return "demo: the simulator exited" in output()

        await wait_for(simulator_gone, 30, "`liandong up` to notice the simulator stopped")
        keys = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "services.cli", "keys", "issue", OFFICE),
            env={**os.environ, **env},
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        office_key, problems = await keys.communicate()
        assert keys.returncode == 0, problems.decode()
        origin = f"http://127.0.0.1:{env['LIANDONG_API_PORT']}"
        demo = DemoHub(origin, login.group(1), login.group(2), office_key.decode().strip(), log, process)
        await _settled(demo)
        yield demo
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        for pid in re.findall(r"pid (\d+)", output()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        if demo is not None:
            await demo.client.aclose()
        await drop_pg_database(database_url)


async def _settled(demo: DemoHub) -> None:
    """Wait until the worker has projected what the simulator published and raised its alerts.

    The store's figures, the supervisor's inbox and the coordination list must read the same three
    times running, a second apart (the worker and the clock scanner work in the background).
    """
    seen: list[str] = []

    async def still() -> bool:
        figures = await demo.api("/v1/analysis/overview")
        inbox = await demo.api("/v1/inbox", limit=1000)
        loops = await demo.api("/v1/coordination", limit=1)
        seen.append(json.dumps([figures["totals"], [a["alert_id"] for a in inbox["items"]], loops["total"]]))
        return len(seen) >= 3 and len(set(seen[-3:])) == 1 and figures["totals"]["cases_filed"] > 0

    await wait_for(still, 90, "the hub to finish projecting the simulated months", interval_s=1.0)


@pytest.fixture(scope="module")
async def browser(hub: DemoHub) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, env={**os.environ, **CHROMIUM_ENV}
        )
        yield instance
        await instance.close()


@dataclass
class Visit:
    """One person's browser session: its page, and every URL the page asked for."""

    context: BrowserContext
    page: Page
    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def show(self, fragment: str) -> None:
        """Go to a page of the dashboard (`#/inbox`) and wait until it has drawn it."""
        renders = await self.page.get_attribute("main", "data-renders")
        await self.page.goto(f"{self.origin}/dashboard/{fragment}")
        await self.drawn(renders)

    async def drawn(self, renders_before: str | None) -> None:
        await self.page.wait_for_selector(
            f"main[data-state=ready]:not([data-renders='{renders_before or 0}'])", timeout=30_000
        )

    async def shot(self, name: str) -> None:
        """Save a screenshot of the whole page, after checking that it fits the screen's width."""
        widths = await self.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"{name}: the page is {widths[0]}px wide in a {widths[1]}px window"
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    async def cells(self, table: str) -> list[list[str]]:
        rows: list[list[str]] = await self.page.locator(f"{table} tbody tr").evaluate_all(
            "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))"
        )
        return rows

    def assert_only_hub(self) -> None:
        strays = [u for u in self.requests if not (u.startswith(self.origin + "/") or u.startswith("data:"))]
        assert strays == [], f"the dashboard asked for something outside the hub: {strays}"
        assert self.errors == [], f"script errors on the page: {self.errors}"


Visitor = Callable[..., Awaitable[Visit]]


@pytest.fixture
async def visit(browser: Browser, hub: DemoHub) -> AsyncIterator[Visitor]:
    contexts: list[BrowserContext] = []

    async def open_(viewport: dict[str, int] | None = None, mobile: bool = False) -> Visit:
        context = await browser.new_context(
            viewport=viewport or {"width": 1366, "height": 900},
            is_mobile=mobile,
            has_touch=mobile,
            device_scale_factor=2 if mobile else 1,
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
            accept_downloads=True,
        )
        contexts.append(context)
        page = await context.new_page()
        v = Visit(context, page, hub.origin)
        page.on("request", lambda request: v.requests.append(request.url))
        page.on("pageerror", lambda error: v.errors.append(str(error)))
        return v

    yield open_
    for context in contexts:
        await context.close()


async def _signed_in_supervisor(visit: Visitor, hub: DemoHub, **options: Any) -> Visit:
    v = await visit(**options)
    await v.page.goto(hub.login_url)
    await v.drawn(None)
    return v


def _int(n: int) -> str:
    return f"{n:,}"


def _dec(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.2f}".rstrip("0").rstrip(".")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


async def test_the_hub_serves_the_dashboard_itself_and_redirects_its_root_there(hub: DemoHub) -> None:
    root = await hub.client.get(hub.origin + "/", follow_redirects=False)
    assert root.status_code == 307
    assert root.headers["location"] == "/dashboard/"
    index = await hub.client.get(hub.origin + "/dashboard/")
    assert index.status_code == 200
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assert '<html lang="zh-CN">' in index.text
    for asset in ("static/app.css", "static/js/app.js", "static/js/charts.js", "labels.json"):
        response = await hub.client.get(f"{hub.origin}/dashboard/{asset}")
        assert response.status_code == 200, asset
        assert not re.search(r"https?://", response.text.replace("http://www.w3.org/2000/svg", "")), asset
    assert (await hub.client.get(hub.origin + "/dashboard/static/../../up.py")).status_code == 404
    assert (await hub.client.get(hub.origin + "/dashboard/static/js/nothing.js")).status_code == 404
    # The dashboard's own routes stay out of the API's OpenAPI document.
    paths = (await hub.client.get(hub.origin + "/openapi.json")).json()["paths"]
    assert not any(p.startswith("/dashboard") for p in paths)


async def test_a_supervisor_signs_in_with_the_demo_link_and_sees_all_sixteen_townships_ranked(
    hub: DemoHub, visit: Visitor
) -> None:
    v = await _signed_in_supervisor(visit, hub)
    page = v.page
    assert "login=" not in page.url, "the key must leave the address bar at once"
    assert await page.evaluate("() => navigator.language") == "zh-CN"
    await expect(page.locator("h1")).to_contain_text("区级总览")
    await expect(page.locator("#who")).to_contain_text("区司法局行政执法协调监督科")
    await expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=15_000)
    await expect(page.locator("#live-text")).to_have_text("实时")

    overview = await hub.api("/v1/analysis/overview")
    rows = await v.cells(".page-overview table.data")
    expected = sorted(overview["items"], key=lambda r: r["rank"])
    assert len(rows) == len(expected) >= 16
    named = {r["name_zh"] for r in expected if r["township"]}
    assert len(named) == 16
    for shown, row in zip(rows, expected, strict=True):
        assert shown[0] == str(row["rank"])
        assert shown[1] == row["name_zh"]
        assert shown[2] == _int(row["cases_filed"]), (shown, row)
        assert shown[6] == _dec(row["cases_per_officer"]), (shown, row)
        assert shown[7] == _pct(row["on_time_rate"]), (shown, row)
        assert shown[9] == _int(row["loops_overdue"]), (shown, row)
    filed_card = page.locator(".card[data-key=cases_filed] .card-value")
    await expect(filed_card).to_have_text(_int(overview["totals"]["cases_filed"]))
    await expect(page.locator(".card[data-key=cases_per_officer]")).to_contain_text("79.95")

    # The charts: a bar per township in both rankings, three lines of the monthly trend.
    await expect(page.locator("svg.bar-chart").first.locator("rect.bar")).to_have_count(16)
    await expect(page.locator("svg.bar-chart").nth(1).locator("text.reference-label")).to_contain_text(
        "79.95"
    )
    trend = await hub.api("/v1/analysis/trend", period="month")
    assert [i["period"] for i in trend["items"]][:2] == ["2022-01", "2022-02"]
    line = page.locator("svg.line-chart")
    await expect(line.locator("polyline.series")).to_have_count(3)
    await expect(line.locator("circle.point")).to_have_count(3 * len(trend["items"]))
    await expect(line.locator("text.tick", has_text="2022-02")).to_have_count(1)
    csv = page.locator(".page-overview .panel").first.locator("a.export-csv")
    assert await csv.get_attribute("href") == "/v1/analysis/overview?format=csv"
    await v.shot("01-overview")
    v.assert_only_hub()


async def test_the_township_drill_down_shows_its_stages_load_clocks_loops_and_cases(
    hub: DemoHub, visit: Visitor
) -> None:
    v = await _signed_in_supervisor(visit, hub)
    page = v.page
    code, name = OFFICE_TOWNSHIP
    renders = await page.get_attribute("main", "data-renders")
    await page.locator(".page-overview table.data a.township-link", has_text=name).click()
    await v.drawn(renders)
    assert page.url.endswith(f"#/township/{code}")
    await expect(page.locator("h1")).to_contain_text(name)
    for heading in (
        "案件阶段",
        "人均办案量",
        "案件趋势",
        "各类时限按时率",
        "协同机制闭环",
        "未处理异常",
        "案件",
    ):
        await expect(page.locator("h2", has_text=heading).first).to_be_visible()

    overview = await hub.api("/v1/analysis/overview", township=code)
    row = next(r for r in overview["items"] if r["township"] == code)
    await expect(page.locator(".card[data-key=cases_filed] .card-value")).to_have_text(
        _int(row["cases_filed"])
    )
    stages = (await hub.api("/v1/analysis/stages", township=code, group_by="township"))["items"][0]
    await expect(page.locator(".panel", has_text="案件阶段").locator(".note")).to_contain_text(
        f"合计 {_int(stages['total'])} 件"
    )
    load = await hub.api("/v1/analysis/load", township=code, group_by="unit")
    office_row = next(r for r in load["items"] if r["group"] == OFFICE)
    load_rows = await v.cells(".panel:has(h2:text('人均办案量')) table.data")
    assert [office_row["name_zh"], _int(office_row["cases_filed"])] in [r[:2] for r in load_rows]
    await expect(page.locator(".panel:has(h2:text('人均办案量')) text.reference-label")).to_contain_text(
        "79.95"
    )
    on_time = await hub.api("/v1/analysis/on-time", township=code, group_by="rule")
    clock_rows = await v.cells(".panel:has(h2:text('各类时限按时率')) table.data")
    assert len(clock_rows) == len(on_time["items"]) > 0
    loops = await hub.api("/v1/analysis/loops", township=code)
    loop_rows = await v.cells(".panel:has(h2:text('协同机制闭环')) table.data")
    assert [r[0] for r in loop_rows] == [r["name_zh"] for r in loops["items"]]

    cases = await hub.api("/v1/cases", township=code, limit=20)
    case_rows = await v.cells(".panel:has(h2:text-is('案件')) table.data")
    assert [r[0] for r in case_rows] == [c["case_id"] for c in cases["items"]]
    await expect(page.locator(".pager-count").last).to_contain_text(f"共 {_int(cases['total'])} 条")
    await v.shot("02-township")
    v.assert_only_hub()


async def _case_with_linked_mechanism(hub: DemoHub) -> str:
    """Of the cases with a linked assistance request or transfer, the one with the longest record."""
    candidates: list[str] = []
    for area in ("assistance", "transfer"):
        loops = await hub.api("/v1/coordination", area=area, township=OFFICE_TOWNSHIP[0], limit=200)
        candidates += [m["case_id"] for m in loops["items"] if m.get("case_id")]
    assert candidates, "the simulated months hold no case with a linked assistance request or transfer"
    counts = {case_id: (await hub.api(f"/v1/cases/{case_id}"))["event_count"] for case_id in candidates[:15]}
    return max(counts, key=lambda case_id: counts[case_id])


async def test_a_case_page_shows_its_full_record_every_clock_and_its_linked_mechanisms(
    hub: DemoHub, visit: Visitor
) -> None:
    case_id = await _case_with_linked_mechanism(hub)
    case = await hub.api(f"/v1/cases/{case_id}")
    labels = (await hub.client.get(hub.origin + "/dashboard/labels.json")).json()
    v = await _signed_in_supervisor(visit, hub)
    await v.show(f"#/case/{case_id}")
    page = v.page
    await expect(page.locator("h1")).to_contain_text(f"案件 {case_id}")
    await expect(page.locator("h2", has_text="全过程记录")).to_be_visible()
    record = page.locator(".panel:has(h2:text('全过程记录')) > ol.timeline > li")
    await expect(record).to_have_count(len(case["events"]))
    first = case["events"][0]
    short = ".".join(first["type"].removeprefix("cn.gov.liandong.").split(".")[:2])
    await expect(record.first).to_contain_text(labels["events"][short]["zh"])
    await expect(record.first).to_contain_text(labels["units"][first["source"]]["zh"])

    clock_rows = await v.cells(".panel:has(h2:text('时限')) table.data")
    assert len(clock_rows) == len(case["clocks"]) > 0
    assert clock_rows[0][0] == labels["rules"][case["clocks"][0]["rule_id"]]["zh"]

    matters = page.locator("details.matter")
    await expect(matters).to_have_count(len(case["matters"]))
    first_matter = case["matters"][0]
    await expect(matters.first).to_contain_text(labels["areas"][first_matter["area"]]["zh"])
    await expect(matters.first.locator("li.timeline-entry").first).to_be_visible()
    await v.shot("03-case")

    renders = await page.get_attribute("main", "data-renders")
    await matters.first.locator("summary a").click()
    await v.drawn(renders)
    await expect(page.locator("h1")).to_contain_text(first_matter["id"])
    await expect(page.locator("h2", has_text="全过程记录")).to_be_visible()
    await v.shot("04-matter")
    v.assert_only_hub()


async def test_the_coordination_tracker_filters_by_status_and_exports_what_it_shows(
    hub: DemoHub, visit: Visitor
) -> None:
    v = await _signed_in_supervisor(visit, hub)
    await v.show("#/coordination")
    page = v.page
    await expect(page.locator("h1")).to_contain_text("协同跟踪")
    everything = await hub.api("/v1/coordination", limit=50)
    await expect(page.locator(".pager-count")).to_contain_text(f"共 {_int(everything['total'])} 条")

    renders = await page.get_attribute("main", "data-renders")
    await page.locator("select[name=status]").select_option("overdue")
    await v.drawn(renders)
    overdue = await hub.api("/v1/coordination", status="overdue", limit=50)
    assert overdue["total"] > 0, "two simulated months leave some coordination loop overdue"
    rows = await v.cells(".page-coordination table.data")
    assert [r[1] for r in rows] == [m["subject_id"] for m in overdue["items"]]
    assert {r[2] for r in rows} == {"已逾期"}
    await expect(page.locator(".pager-count")).to_contain_text(f"共 {_int(overdue['total'])} 条")

    async with page.expect_download() as download_info:
        await page.locator("a.export-csv").click()
    download = await download_info.value
    text = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
    assert text.startswith("\ufeff"), "CSV for Excel starts with a byte-order mark"
    assert len(text.strip().splitlines()) == overdue["total"] + 1
    assert (
        await page.locator("a.export-xlsx").get_attribute("href")
    ) == "/v1/coordination?status=overdue&format=xlsx"
    await v.shot("05-coordination")
    v.assert_only_hub()


async def test_acknowledging_an_alert_and_issuing_a_supervision_order_really_reach_the_hub(
    hub: DemoHub, visit: Visitor
) -> None:
    inbox = await hub.api("/v1/inbox", limit=1000)
    waiting = [a for a in inbox["items"] if a["open"] and not a["acknowledged_at"]]
    assert waiting, "the simulated months must leave alerts in the supervision section's inbox"
    v = await _signed_in_supervisor(visit, hub)
    await v.show("#/inbox")
    page = v.page
    await expect(page.locator("h1")).to_contain_text("预警督办")
    await expect(page.locator("article.alert-card")).to_have_count(min(50, len(inbox["items"])))
    target = waiting[0]
    card = page.locator(f"article[data-alert-id='{target['alert_id']}']")
    await expect(card).to_contain_text(target["rule_name_zh"])
    await expect(card).to_contain_text("待确认")
    await v.shot("06-inbox")

    renders = await page.get_attribute("main", "data-renders")
    async with page.expect_response(lambda r: r.url.endswith("/acknowledge")) as acknowledged:
        await card.locator("button.ack").click()
    response = await acknowledged.value
    assert response.status == 202
    assert response.request.headers.get("x-liandong-csrf") == "1"
    # No reload: the live stream tells the page the hub recorded the acknowledgement.
    await expect(card).to_contain_text("已确认", timeout=30_000)
    assert await page.get_attribute("main", "data-renders") != renders
    after = await hub.api("/v1/inbox", limit=1000)
    assert next(a for a in after["items"] if a["alert_id"] == target["alert_id"])["acknowledged_by"] == (
        "district.justice-bureau"
    )
    await v.shot("07-inbox-acknowledged")

    await card.locator("button.order").click()
    dialog = page.locator("dialog.dialog")
    await expect(dialog).to_be_visible()
    reply_by = await dialog.locator("input[name=reply_by]").input_value()
    assert date.fromisoformat(reply_by) >= date.today(), "a reply date in the past would be refused"
    await dialog.locator("textarea[name=reason]").fill("请于期限内说明逾期原因并办结（端到端测试）")
    await v.shot("08-supervision-order")
    async with page.expect_response(lambda r: r.url.endswith("/v1/supervision-orders")) as issued:
        await dialog.locator("button[type=submit]").click()
    order = await issued.value
    assert order.status == 202, await order.text()
    order_id = (await order.json())["order_id"]
    await expect(page.locator("#toast")).to_contain_text(f"督办令已下达 Order issued：{order_id}")
    await expect(dialog).to_have_count(0)
    v.assert_only_hub()


async def _downloaded(page: Page, link: str) -> bytes:
    async with page.expect_download() as download_info:
        await page.locator(link).click()
    download = await download_info.value
    return await asyncio.to_thread(Path(await download.path()).read_bytes)


def _xlsx_rows(body: bytes) -> list[list[Any]]:
    sheet = load_workbook(io.BytesIO(body), read_only=True).worksheets[0]
    return [list(row) for row in sheet.iter_rows(values_only=True)]


async def test_the_inbox_exports_every_alert_it_lists_and_shows_risk_alerts_without_a_deadline(
    hub: DemoHub, visit: Visitor
) -> None:
    alerts = (await hub.api("/v1/inbox", limit=1000))["items"]
    assert alerts, "the simulated months must leave alerts in the supervision section's inbox"
    v = await _signed_in_supervisor(visit, hub)
    await v.show("#/inbox")
    page = v.page
    await expect(page.locator(".pager-count")).to_contain_text(f"共 {_int(len(alerts))} 条")

    # The CSV is every alert the inbox lists, not only the page shown.
    csv_link = page.locator(".page-inbox a.export-csv")
    assert await csv_link.get_attribute("href") == "/v1/inbox?open=true&format=csv"
    text = (await _downloaded(page, ".page-inbox a.export-csv")).decode("utf-8")
    assert text.startswith("\ufeff"), "CSV for Excel starts with a byte-order mark"
    header, *rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    assert header[0] == "预警编号 Alert id"
    assert len(rows) == len(alerts)
    assert sorted(r[0] for r in rows) == sorted(a["alert_id"] for a in alerts)

    # The level filter offers risk alerts; the export follows the filter.
    options = await page.locator("select[name=level] option").all_inner_texts()
    assert "风险预警 Risk" in options
    renders = await page.get_attribute("main", "data-renders")
    await page.locator("select[name=level]").select_option("risk")
    await v.drawn(renders)
    assert "#/inbox?level=risk" in page.url
    risks = [a for a in alerts if a["level"] == "risk"]
    assert (
        await page.locator(".page-inbox a.export-xlsx").get_attribute("href")
    ) == "/v1/inbox?level=risk&open=true&format=xlsx"
    sheet = _xlsx_rows(await _downloaded(page, ".page-inbox a.export-xlsx"))
    assert sheet[0][0] == "预警编号 Alert id"
    assert sorted(str(r[0]) for r in sheet[1:]) == sorted(a["alert_id"] for a in risks)

    cards = page.locator("article.alert-card")
    await expect(cards).to_have_count(min(50, len(risks)))
    # Risk alerts come from the anomaly detectors; a demo run without any still checks the rest.
    for alert in risks[:3]:
        assert alert["rule_id"].startswith("anomaly."), alert
        card = page.locator(f"article[data-alert-id='{alert['alert_id']}']")
        await expect(card.locator("header .badge").first).to_have_text("风险预警 Risk")
        await expect(card.locator(".alert-rule")).to_have_text(alert["rule_name_zh"])
        await expect(card.locator(".citation")).to_contain_text(alert["citation"])
        # Not late, and no deadline to count down to: found at, instead.
        await expect(card.locator(".badge", has_text="逾期")).to_have_count(0)
        await expect(card.locator("dt", has_text="期限")).to_have_count(0)
        await expect(card.locator("dt", has_text="发现")).to_have_count(1)
        # What was found, in Chinese, with units and townships by name rather than by code.
        found = await hub.api("/v1/anomalies", subject=alert["about_subject"])
        detail = next((a["detail"] for a in found["items"] if a["anomaly_id"] == alert["alert_id"]), "")
        if " | " in detail:
            shown = await card.locator(".alert-detail").inner_text()
            assert shown, "the risk alert's card says what was found"
            assert " | " not in shown, f"only the Chinese half: {shown}"
            assert not re.search(r"\b[a-z]+\.[a-z-]+\b", shown), f"a unit id instead of its name: {shown}"
    if risks:
        await v.shot("17-inbox-risk")
    v.assert_only_hub()


async def test_the_dispute_list_and_the_publication_register_show_the_apis_rows(
    hub: DemoHub, visit: Visitor
) -> None:
    v = await _signed_in_supervisor(visit, hub)
    page = v.page
    await v.show("#/disputes")
    await expect(page.locator("h1")).to_contain_text("职责争议清单")
    disputes = await hub.api("/v1/disputes", limit=50)
    assert disputes["total"] > 0, "the simulator raises three disputes per township a year"
    rows = await v.cells(".page-disputes table.data")
    assert [r[0] for r in rows] == [d["dispute_id"] for d in disputes["items"]]
    assert (await page.locator("a.export-xlsx").get_attribute("href")) == "/v1/disputes?format=xlsx"
    await v.shot("09-disputes")

    await v.show("#/publications?status=published")
    await expect(page.locator("h1")).to_contain_text("公示台账")
    published = await hub.api("/v1/publications/register", status="published", limit=50)
    assert published["total"] > 0
    rows = await v.cells(".page-publications table.data")
    assert [r[0] for r in rows] == [p["case_id"] for p in published["items"]]
    assert {r[1] for r in rows} == {"已公示"}
    await expect(page.locator("select[name=status]")).to_have_value("published")
    await v.shot("10-publications")
    v.assert_only_hub()


async def test_a_township_office_signs_in_with_its_key_and_sees_only_its_own_township(
    hub: DemoHub, visit: Visitor
) -> None:
    name = OFFICE_TOWNSHIP[1]
    other_code, other_name = OTHER_TOWNSHIP
    v = await visit()
    page = v.page
    await page.goto(hub.origin + "/")
    assert page.url == hub.origin + "/dashboard/"
    await expect(page.locator("h1")).to_contain_text("执法监督看板")
    await v.shot("11-login")
    await page.locator("#key").fill("ld_000000000000_not-a-key")
    await page.locator("button[type=submit]").click()
    await expect(page.locator(".login .error")).to_contain_text("密钥无效")
    await page.locator("#key").fill(hub.office_key)
    await page.locator("button[type=submit]").click()
    await v.drawn(None)

    await expect(page.locator("#who")).to_contain_text("石楼镇综合行政执法办公室")
    await expect(page.locator("h1")).to_contain_text("辖区概览")
    rows = await v.cells(".page-overview table.data")
    assert [r[1] for r in rows] == [name]
    assert other_name not in await page.locator("main").inner_text()
    await v.shot("12-office-overview")

    await v.show(f"#/township/{other_code}")
    await expect(page.locator("h1")).to_contain_text("无权查看")
    await v.shot("13-office-forbidden")
    other_case = (await hub.api("/v1/cases", township=other_code, limit=1))["items"][0]["case_id"]
    await v.show(f"#/case/{other_case}")
    await expect(page.locator("h1")).to_contain_text("未找到")

    await v.show("#/coordination")
    options = await page.locator("select[name=township] option").all_inner_texts()
    assert options == ["全部", name]
    townships = {r[3] for r in await v.cells(".page-coordination table.data")}
    assert townships == {name}

    await page.locator("#logout").click()
    await expect(page.locator("#key")).to_be_visible()
    me = await page.request.get(hub.origin + "/v1/me")
    assert me.status == 401, "signing out ends the session"
    v.assert_only_hub()


async def test_on_a_phone_the_menu_collapses_and_tables_scroll_inside_the_page(
    hub: DemoHub, visit: Visitor
) -> None:
    v = await _signed_in_supervisor(visit, hub, viewport=PHONE, mobile=True)
    page = v.page
    await expect(page.locator("h1")).to_contain_text("区级总览")
    await expect(page.locator("#menu-toggle")).to_be_visible()
    await expect(page.locator("#nav")).to_be_hidden()
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide on a {PHONE['width']}px screen"
    table = page.locator(".page-overview .table-wrap").first
    await expect(table).to_be_visible()
    box = await table.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE["width"]
    scroll = await table.evaluate("t => [t.scrollWidth, t.clientWidth]")
    assert scroll[0] > scroll[1], "the ranking table scrolls sideways inside its panel"
    await v.shot("14-phone-overview")

    await page.locator("#menu-toggle").click()
    await expect(page.locator("#nav")).to_be_visible()
    await expect(page.locator("#nav a")).to_have_count(5)
    await v.shot("15-phone-menu")
    renders = await page.get_attribute("main", "data-renders")
    await page.locator("#nav a", has_text="预警督办").click()
    await v.drawn(renders)
    await expect(page.locator("#nav")).to_be_hidden()
    await expect(page.locator("article.alert-card").first).to_be_visible()
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    await v.shot("16-phone-inbox")
    v.assert_only_hub()
