"""Live connectivity per source: DNS, TCP, TLS certificate expiry, HTTP status, credential validity
(HTTP APIs); a `SELECT 1` (SQL sources, a refused login told apart); the file and its age (notify logs). Checks run in
parallel, each bounded by a short timeout; no credential is sent and none appears in the output."""

from __future__ import annotations

import json
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from collectors.sql_source import classify_db_error
from diagnose.model import Finding
from diagnose.probes import Context


def check_http(url: str, timeout: float, now: datetime) -> dict:
    """DNS → TCP → TLS (expiry) → HTTP status of an unsigned GET; the first failing step named."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    out: dict = {"host": host, "port": port}
    try:
        started = time.perf_counter()
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        out["dns_ms"] = round((time.perf_counter() - started) * 1000, 1)
    except OSError as exc:
        return {**out, "ok": False, "step": "dns", "error": type(exc).__name__}
    family, _, _, _, address = addresses[0]
    try:
        started = time.perf_counter()
        with socket.create_connection(address[:2], timeout=timeout) as sock:
            out["tcp_ms"] = round((time.perf_counter() - started) * 1000, 1)
            if parts.scheme == "https":
                context = ssl.create_default_context()
                with context.wrap_socket(sock, server_hostname=host) as tls:
                    cert = tls.getpeercert()
                expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
                out["tls_expires"] = expires.isoformat()
                out["tls_days_left"] = round((expires - now).total_seconds() / 86400, 1)
    except ssl.SSLError as exc:
        return {**out, "ok": False, "step": "tls", "error": exc.reason or type(exc).__name__}
    except OSError as exc:
        return {**out, "ok": False, "step": "tcp", "error": type(exc).__name__}
    try:
        response = requests.get(url, timeout=timeout, allow_redirects=False)
        out["http_status"] = response.status_code
    except requests.RequestException as exc:
        return {**out, "ok": False, "step": "http", "error": type(exc).__name__}
    if out.get("tls_days_left") is not None and out["tls_days_left"] < 7:
        return {**out, "ok": False, "step": "tls", "error": "certificate expires within 7 days"}
    if response.status_code == 429 or response.status_code >= 500:
        return {**out, "ok": False, "step": "http", "error": f"HTTP {response.status_code}"}
    return {**out, "ok": True}


def check_sql(url: str, timeout: float) -> dict:
    parsed = make_url(url)
    out: dict = {"database": parsed.render_as_string(hide_password=True)}
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path and path != ":memory:" and not Path(path).exists():
            return {**out, "ok": False, "step": "file", "error": "database file missing"}
    args = {"connect_timeout": max(1, int(timeout))} if parsed.get_backend_name() != "sqlite" else {}
    engine = create_engine(url, connect_args=args)
    try:
        started = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {**out, "ok": True, "connect_ms": round((time.perf_counter() - started) * 1000, 1)}
    except DBAPIError as exc:  # named by its error class only: a driver's text may quote the login
        error = classify_db_error("check", exc, parsed.password).error_class
        return {**out, "ok": False, "step": "login" if error == "auth_expired" else "connect", "error": error}
    except Exception as exc:  # any other failure is a failed check, named by its class
        return {**out, "ok": False, "step": "connect", "error": type(exc).__name__}
    finally:
        engine.dispose()


def check_file(path: str, now: datetime) -> dict:
    p = Path(path)
    if not p.exists():
        return {"path": path, "ok": False, "step": "file", "error": "file missing"}
    stat = p.stat()
    return {
        "path": path,
        "ok": True,
        "bytes": stat.st_size,
        "modified_age_s": round(now.timestamp() - stat.st_mtime, 1),
    }


def _check(name: str, source, timeout: float, now: datetime) -> dict:
    if source.kind == "http" and source.url:
        return check_http(source.url, timeout, now)
    if source.kind == "sql" and source.url:
        return check_sql(source.url, timeout)
    if source.kind == "logfile" and source.path:
        return check_file(source.path, datetime.now(UTC))
    return {"ok": True, "step": "skipped"}


def _has_login(source) -> bool:
    """A SQL source whose URL carries a password: its login is a credential too."""
    if source.kind != "sql" or not source.url:
        return False
    try:
        return bool(make_url(source.url).password)
    except ArgumentError:
        return False


def probe_connectivity(ctx: Context) -> list[Finding]:
    """Each enabled source checked live (when ctx.live) and its credential judged from its health."""
    sources = {n: s for n, s in ctx.config.sources.items() if s.enabled}
    if not sources:
        return []
    results: dict[str, dict] = {}
    if ctx.live:
        workers = min(8, len(sources))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="diagnose-conn") as pool:
            futures = {n: pool.submit(_check, n, s, ctx.live_timeout_s, ctx.now) for n, s in sources.items()}
            for name, future in futures.items():
                try:
                    results[name] = future.result(timeout=ctx.live_timeout_s * 4 + 1)
                except Exception as exc:  # a hung or broken check is a failed check
                    results[name] = {"ok": False, "step": "check", "error": type(exc).__name__}
    findings, healthy = [], []
    for name, source in sources.items():
        live = results.get(name, {})
        health = ctx.health_of(name) or {}
        errors = json.loads(health.get("errors_json") or "{}")
        credential = "n/a"
        if source.credentials or _has_login(source):
            credential = (
                "rejected"
                if health.get("last_error_class") == "auth_expired"
                else "accepted"
                if health.get("up")
                else "unknown"
            )
        entry = {
            "fact": "connectivity",
            "source": name,
            "kind": source.kind,
            "credential": credential,
            **live,
        }
        if live.get("ok", True) and credential != "rejected":
            healthy.append(name)
            continue
        if credential == "rejected":
            title = f"数据源 {name} 网络可达，但凭证被拒（{errors.get('auth_expired', 0)} 次 auth_expired）"
            findings.append(Finding("connectivity", title, [entry], [], "api_key_rotated", 0.6))
        elif live.get("error") == "HTTP 429":
            findings.append(
                Finding(
                    "connectivity",
                    f"数据源 {name} 实时探测返回 HTTP 429（限流）",
                    [entry],
                    [],
                    "api_rate_limited",
                    0.5,
                )
            )
        else:
            title = f"数据源 {name} 连通性失败：{live.get('step')} {live.get('error')}"
            findings.append(Finding("connectivity", title, [entry]))
    if healthy and ctx.live:
        findings.append(
            Finding(
                "connectivity",
                f"{len(healthy)} 个数据源连通正常",
                [{"fact": "connectivity_ok", "sources": healthy}],
            )
        )
    return findings
