"""Screenshots of every dashboard page for the README, from real simulated data.

    .venv/bin/python docs/screenshots.py [--scenario wms_push_gap] [--out docs/screenshots]

Replays the scenario through the real pipeline into a temporary store, starts the real dashboard over
it, logs in through the form in headless Chromium (/usr/bin/chromium, Debian) with Playwright, and
saves one PNG per page: as an operator (buyer data masked), the audit page as an admin.
Chinese text needs a CJK font (Debian: fonts-wqy-microhei).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.dashboard import CHROMIUM, login, open_page, running_dashboard  # noqa: E402
from sim.runner import run_scenario  # noqa: E402

PASSWORDS = {"operator": "operator-docs-pass", "admin": "admin-docs-pass"}
# page -> a text that shows it has rendered
READY = {
    "overview": "核心指标",
    "cube": "格子里的订单",
    "lifecycle": "停留时长统计",
    "sources": "隔离区",
    "alerts": "静默",
    "reconcile": "立即对账",
    "diagnose": "诊断对象",
    "audit": "审计日志",
}


def shoot(page, path: Path) -> None:
    """The whole page: the viewport grown to the main block's height first (it scrolls inside)."""
    page.mouse.move(0, 0)  # no hover label over the chart
    page.wait_for_timeout(1500)  # let Plotly finish its transition before the picture
    height = page.evaluate("document.querySelector('[data-testid=stMainBlockContainer]').scrollHeight")
    page.set_viewport_size({"width": 1440, "height": min(max(900, height + 40), 4000)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1440, "height": 900})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="wms_push_gap")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/store.db"
        print(f"replaying {args.scenario}", file=sys.stderr)
        run_scenario(args.scenario, store_url=url)
        with running_dashboard(url, PASSWORDS) as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            login(page, base, "operator", PASSWORDS["operator"])
            for name in ("overview", "cube", "lifecycle", "sources", "alerts", "reconcile", "diagnose"):
                if name != "overview":
                    open_page(page, name)
                page.get_by_text(READY[name]).first.wait_for(timeout=60_000)
                if name == "cube":  # click the heatmap's earliest cell: its orders below, phones masked
                    point = page.locator(".js-plotly-plot .scatterlayer .point").first
                    box = point.bounding_box()
                    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                    page.get_by_text(re.compile(r"· 已付款：\d+ 单$")).wait_for(timeout=30_000)
                if name == "reconcile":
                    page.get_by_role("button", name="立即对账").click()
                    page.get_by_text("参与对账订单").wait_for(timeout=120_000)
                if name == "diagnose":  # the replay's source servers are gone: no connectivity checks
                    page.get_by_text("同时检查各数据源连通性").click()
                    page.get_by_role("button", name="一键诊断").click()
                    page.get_by_text(re.compile(r"^诊断用时")).wait_for(timeout=120_000)
                shoot(page, args.out / f"{name}.png")
                print(f"  {name}.png", file=sys.stderr)
            page.close()
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            login(page, base, "admin", PASSWORDS["admin"])
            open_page(page, "audit")
            page.get_by_text(READY["audit"]).first.wait_for(timeout=60_000)
            shoot(page, args.out / "audit.png")
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
