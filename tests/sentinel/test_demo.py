"""`make demo`'s command: the simulated world, the service and the dashboard come up and answer."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, deadline: float) -> requests.Response:
    """Poll an external process until it answers (it starts in its own time, not on our clock)."""
    while True:
        try:
            answer = requests.get(url, timeout=2)
            if answer.status_code == 200:
                return answer
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer in time")
        time.sleep(0.3)


def test_demo_serves_the_dashboard_and_metrics(tmp_path):
    dash = _free_port()
    cmd = [
        sys.executable, "-m", "sentinel", "demo", "--speed", "60", "--dashboard-port", str(dash),
        "--metrics-port", "0", "--workdir", str(tmp_path / "demo"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
    )
    try:
        lines, deadline = [], time.monotonic() + 90
        while not any("/metrics:" in line for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "demo exited early:\n" + "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        printed = "".join(lines)
        assert f"dashboard: http://127.0.0.1:{dash}" in printed
        for role in ("viewer", "operator", "admin"):  # a fresh password per demo run, hashes to the dashboard
            assert re.search(rf"login {role}\s+password \S{{12}}", printed), printed
        metrics_url = re.search(r"/metrics:\s+(\S+)", printed).group(1)
        exposition = _wait_for(metrics_url, deadline).text
        assert "fulfillment_sync_success_ratio" in exposition
        assert "fulfillment_source_up" in exposition
        assert _wait_for(f"http://127.0.0.1:{dash}/_stcore/health", deadline).text == "ok"
        page = _wait_for(f"http://127.0.0.1:{dash}/", deadline).text
        assert "<noscript>" in page or "streamlit" in page.lower()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
