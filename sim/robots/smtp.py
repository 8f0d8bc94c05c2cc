"""A local SMTP submission server (stdlib asyncio) on port 0: EHLO, STARTTLS, AUTH, SIZE, limits, faults.

Speaks enough of RFC 5321 for smtplib: EHLO/HELO, STARTTLS or implicit TLS (given a server TLS
context), AUTH PLAIN and LOGIN (only after TLS when TLS is offered), MAIL FROM (with SIZE=), RCPT TO,
DATA (dot-unstuffed), RSET, NOOP, QUIT. Replies modelled on common providers:
  530 authentication required / STARTTLS first     535 authentication failed
  553 sender not owned by the authenticated user   550 unknown recipient
  552 message over `max_size`                      421 over `per_minute` messages (then closes)
`fail_next(stage, code, text, times)` makes the next commands of a stage (connect, ehlo, auth, mail, rcpt,
data) answer with that reply instead. Passwords are checked, never recorded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
import threading
from collections import deque
from collections.abc import Mapping
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Self

from sentinel.clock import Clock
from sim.robots.base import SlidingWindow

STAGES = ("connect", "ehlo", "auth", "mail", "rcpt", "data")


class _Session:
    def __init__(self) -> None:
        self.tls = False
        self.user: str | None = None
        self.reset()

    def reset(self) -> None:
        self.mail_from: str | None = None
        self.rcpt_to: list[str] = []


class SmtpReceiver:
    """SMTP on 127.0.0.1:<free port>; `received` holds one dict per accepted message."""

    def __init__(
        self,
        clock: Clock,
        users: Mapping[str, str] | None = None,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        auth_methods: tuple[str, ...] = ("PLAIN", "LOGIN"),
        max_size: int = 10 * 1024 * 1024,
        per_minute: int | None = None,
        reject_recipients: tuple[str, ...] = (),
        sender_must_match_user: bool = True,
    ) -> None:
        self.clock = clock
        self.users = dict(users or {})
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls  # TLS from the first byte (port 465 style) instead of STARTTLS
        self.auth_methods = auth_methods
        self.max_size = max_size
        self.reject_recipients = set(reject_recipients)
        self.sender_must_match_user = sender_must_match_user
        self.received: list[dict[str, Any]] = []
        self.auth_attempts: list[tuple[str, bool]] = []  # (user, ok)
        self._window = SlidingWindow(per_minute) if per_minute else None
        self._faults: dict[str, deque[str]] = {stage: deque() for stage in STAGES}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            context = self.tls_context if self.implicit_tls else None
            server = asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
            self._server = self._loop.run_until_complete(server)
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="smtp-sim", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("SMTP sim did not start")
        return self

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("SmtpReceiver is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def close(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        loop.close()
        self._loop, self._server, self._thread = None, None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control and inspection ---------------------------------------------------------------
    def fail_next(self, stage: str, code: int, text: str, times: int = 1) -> None:
        """Answer the next `times` commands of `stage` with `code text` (e.g. "data", 554, "5.7.1 spam")."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")
        with self._lock:
            self._faults[stage].extend([f"{code} {text}"] * times)

    def messages(self) -> list[EmailMessage]:
        """Every accepted message, parsed with the default (RFC 6532-aware) policy."""
        with self._lock:
            raw = [r["data"] for r in self.received]
        return [BytesParser(policy=policy.default).parsebytes(data) for data in raw]

    def _fault(self, stage: str) -> str | None:
        with self._lock:
            return self._faults[stage].popleft() if self._faults[stage] else None

    # -- the protocol -------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._dialogue(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _dialogue(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode("utf-8") + b"\r\n")
            await writer.drain()

        fault = self._fault("connect")
        if fault:
            await reply(fault)
            return
        await reply("220 sentinel-smtp-sim ESMTP ready")
        session = _Session()
        session.tls = self.implicit_tls
        while True:
            line = await reader.readline()
            if not line:
                return
            if len(line) > 1000:
                await reply("500 5.5.2 Line too long")
                continue
            verb, _, arg = line.decode("utf-8", "replace").rstrip("\r\n").partition(" ")
            verb = verb.upper()
            if verb == "QUIT":
                await reply("221 2.0.0 Bye")
                return
            if verb in ("EHLO", "HELO"):
                session.reset()
                await reply(self._fault("ehlo") or "\r\n".join(self._ehlo_lines(session, verb)))
            elif verb == "STARTTLS":
                if self.tls_context is None or session.tls:
                    await reply("502 5.5.1 STARTTLS not available")
                    continue
                await reply("220 2.0.0 Ready to start TLS")
                await writer.start_tls(self.tls_context)
                session = _Session()
                session.tls = True
            elif verb == "AUTH":
                await reply(await self._auth(session, arg, reader, reply))
            elif verb == "MAIL":
                answer = self._mail(session, arg)
                await reply(answer)
                if answer.startswith("421"):
                    return
            elif verb == "RCPT":
                await reply(self._rcpt(session, arg))
            elif verb == "DATA":
                if not session.rcpt_to:
                    await reply("503 5.5.1 Error: need RCPT command")
                    continue
                await reply("354 End data with <CR><LF>.<CR><LF>")
                await reply(self._data(session, await _read_data(reader)))
                session.reset()
            elif verb == "RSET":
                session.reset()
                await reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                await reply("250 2.0.0 Ok")
            else:
                await reply("502 5.5.2 Error: command not recognized")

    def _auth_offered(self, session: _Session) -> bool:
        return bool(self.users) and (session.tls or self.tls_context is None)

    def _ehlo_lines(self, session: _Session, verb: str) -> list[str]:
        if verb == "HELO":
            return ["250 sentinel-smtp-sim"]
        extensions = [f"SIZE {self.max_size}", "8BITMIME"]
        if self.tls_context is not None and not session.tls:
            extensions.append("STARTTLS")
        if self._auth_offered(session):
            extensions.append("AUTH " + " ".join(self.auth_methods))
        lines = ["sentinel-smtp-sim", *extensions]
        return [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]

    async def _auth(self, session: _Session, arg: str, reader: asyncio.StreamReader, reply) -> str:
        fault = self._fault("auth")
        if fault:
            return fault
        if not self.users:
            return "502 5.5.1 AUTH not supported"
        if not self._auth_offered(session):
            return "530 5.7.0 Must issue a STARTTLS command first"
        if session.user is not None:
            return "503 5.5.1 Already authenticated"
        method, _, initial = arg.partition(" ")
        method = method.upper()
        if method not in self.auth_methods:
            return "504 5.5.4 Unrecognized authentication type"

        async def ask(prompt: str) -> str:
            await reply(f"334 {prompt}")
            return (await reader.readline()).decode("ascii", "replace").strip()

        try:
            if method == "PLAIN":
                token = initial or await ask("")
                _, user, password = base64.b64decode(token, validate=True).decode("utf-8").split("\0", 2)
            else:
                encoded = initial or await ask(base64.b64encode(b"Username:").decode())
                user = base64.b64decode(encoded, validate=True).decode("utf-8")
                password = base64.b64decode(
                    await ask(base64.b64encode(b"Password:").decode()), validate=True
                ).decode("utf-8")
        except (binascii.Error, ValueError):
            return "501 5.5.2 Cannot decode response"
        ok = user in self.users and self.users[user] == password
        with self._lock:
            self.auth_attempts.append((user, ok))
        if not ok:
            return "535 5.7.8 Error: authentication failed"
        session.user = user
        return "235 2.7.0 Authentication successful"

    def _mail(self, session: _Session, arg: str) -> str:
        fault = self._fault("mail")
        if fault:
            return fault
        if self.users and session.user is None:
            return "530 5.7.0 Authentication required"
        address, params = _address(arg, "FROM:")
        if address is None:
            return "501 5.5.4 Syntax: MAIL FROM:<address>"
        size = params.get("SIZE", "0")
        if size.isdigit() and int(size) > self.max_size:
            return "552 5.3.4 Message size exceeds fixed limit"
        if self._window is not None and not self._window.hit("all", self.clock.now()):
            return "421 4.7.0 Too many messages, try again later"
        if self.sender_must_match_user and session.user is not None and address != session.user:
            return f"553 5.7.1 <{address}>: Sender address rejected: not owned by user {session.user}"
        session.reset()
        session.mail_from = address
        return "250 2.1.0 Ok"

    def _rcpt(self, session: _Session, arg: str) -> str:
        fault = self._fault("rcpt")
        if fault:
            return fault
        if session.mail_from is None:
            return "503 5.5.1 Error: need MAIL command"
        address, _ = _address(arg, "TO:")
        if not address:
            return "501 5.5.4 Syntax: RCPT TO:<address>"
        if address in self.reject_recipients:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        session.rcpt_to.append(address)
        return "250 2.1.5 Ok"

    def _data(self, session: _Session, data: bytes) -> str:
        fault = self._fault("data")
        if fault:
            return fault
        if len(data) > self.max_size:
            return "552 5.3.4 Message size exceeds fixed limit"
        with self._lock:
            number = len(self.received) + 1
            self.received.append(
                {
                    "at": self.clock.now().isoformat(),
                    "user": session.user,
                    "tls": session.tls,
                    "mail_from": session.mail_from,
                    "rcpt_to": list(session.rcpt_to),
                    "data": data,
                }
            )
        return f"250 2.0.0 Ok: queued as SIM{number:05d}"


async def _read_data(reader: asyncio.StreamReader) -> bytes:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line in (b".\r\n", b".\n"):
            return b"".join(lines)
        lines.append(line[1:] if line.startswith(b".") else line)  # dot-unstuffing


def _address(arg: str, prefix: str) -> tuple[str | None, dict[str, str]]:
    if not arg.upper().startswith(prefix):
        return None, {}
    rest = arg[len(prefix) :].strip()
    if not rest.startswith("<") or ">" not in rest:
        return None, {}
    address, _, tail = rest[1:].partition(">")
    params = dict(p.partition("=")[::2] for p in tail.split() if "=" in p)
    return address, {k.upper(): v for k, v in params.items()}
