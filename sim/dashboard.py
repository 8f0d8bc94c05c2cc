"""The real dashboard in a subprocess over a given store, and a browser login: for the end-to-end
test, the screenshots (docs/screenshots.py) and anyone who wants to look at a replayed scenario."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from sentinel.auth import hash_password

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright never downloads a browser here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_dashboard(store_url: str, passwords: dict[str, str], timeout: float = 90) -> Iterator[str]:
    """`streamlit run app.py` on a free port over `store_url`, users viewer/operator/admin with the
    given passwords (config.toml reads their hashes from the environment); yields the base URL."""
    port = free_port()
    env = {**os.environ, "SENTINEL_STORE_URL": store_url}
    for role, password in passwords.items():
        env[f"SENTINEL_{role.upper()}_PASSWORD_HASH"] = hash_password(password)
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
        "--server.headless", "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if requests.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the dashboard did not answer on {url} within {timeout:.0f}s")
            time.sleep(0.2)  # waiting for a real process to listen, not for virtual time
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def login(page, url: str, user: str, password: str) -> None:
    """Log in through the form (a Playwright page) and wait for the overview."""
    page.goto(url)
    page.get_by_label("用户名").fill(user)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()
    page.get_by_role("heading", name="履约健康总览").wait_for(timeout=60_000)


def open_page(page, path: str) -> None:
    """Go to a dashboard page through the sidebar (a new URL would start a new, logged-out session)."""
    page.locator(f'[data-testid="stSidebarNav"] a[href$="/{path}"]').click()
