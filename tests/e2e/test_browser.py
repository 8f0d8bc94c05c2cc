"""End to end in headless Chromium (Debian package) with Playwright: the wms_push_gap incident replayed
into a store, the real dashboard over it, a viewer logs in, sees the red KPI, clicks the heatmap cell,
gets the stuck orders with masked phones, and runs the one-click diagnosis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sim.dashboard import CHROMIUM, login, open_page, running_dashboard
from sim.runner import run_scenario

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} (Debian chromium) is not installed"
)
PASSWORDS = {"viewer": "viewer-e2e-pass", "operator": "operator-e2e-pass"}
FULL_PHONE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    """The store after the wms_push_gap replay (639 paid Tmall orders never reach the WMS)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('e2e') / 'store.db'}"
    report = run_scenario("wms_push_gap", store_url=url)
    assert any(a["rule"] == "sync_ratio_low" for a in report["alerts"])
    return url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def test_viewer_sees_the_red_kpi_and_drills_into_the_stuck_orders(incident, browser):
    with running_dashboard(incident, PASSWORDS) as url:
        page = browser.new_page(viewport={"width": 1500, "height": 1400})
        login(page, url, "viewer", PASSWORDS["viewer"])

        tile = page.locator('[data-testid="stMetric"]', has_text="订单状态同步成功率")
        assert "65.31%" in tile.inner_text()
        delta = tile.locator('[data-testid="stMetricDelta"]')
        red, green, blue = map(int, re.findall(r"\d+", delta.evaluate("e => getComputedStyle(e).color"))[:3])
        assert red > 120 and red > 2 * green and red > 2 * blue, "the sync ratio is shown in red"
        page.locator('[data-testid="stDataFrame"] td', has_text="sync_ratio_low").first.wait_for(
            state="attached", timeout=30_000
        )

        open_page(page, "cube")
        points = page.locator(".js-plotly-plot .scatterlayer .point")
        points.first.wait_for(timeout=60_000)
        caption = page.get_by_text(re.compile(r"^天猫 · .* · 已付款：\d+ 单$"))
        before = caption.inner_text()
        box = points.first.bounding_box()  # the earliest bucket: not the one the pickers start on
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function(
            "before => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
            ".some(e => /^天猫 · .* · 已付款：\\d+ 单$/.test(e.innerText) && e.innerText !== before)",
            arg=before,
            timeout=30_000,
        )
        after = caption.inner_text()
        assert after != before
        n = int(re.search(r"(\d+) 单$", after).group(1))
        assert n > 0

        grid = page.locator('[data-testid="stDataFrame"]').last
        header = grid.locator("table th").all_text_contents()
        phone_col = header.index("手机号")
        grid.locator("table tbody td", has_text="TB_").first.wait_for(state="attached", timeout=30_000)
        rows = grid.locator("table tbody tr")
        for i in range(rows.count()):
            cells = rows.nth(i).locator("td").all_text_contents()
            assert cells[0].startswith("TB_") and cells[3] == "已付款"
            assert re.fullmatch(r"\*+\d{0,4}", cells[phone_col]), cells
        assert not FULL_PHONE.search(page.content())

        open_page(page, "diagnose")
        page.get_by_text("同时检查各数据源连通性").click()  # the replay's source servers are gone
        page.get_by_role("button", name="一键诊断").click()
        top = page.get_by_text(re.compile(r"^1\. ERP→WMS 推送静默中断 — \d+%$"))
        top.wait_for(timeout=120_000)
        assert page.get_by_text(re.compile(r"^诊断用时 [\d.]+ 秒")).count() == 1
        assert not FULL_PHONE.search(page.content())
        page.close()
