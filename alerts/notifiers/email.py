"""SMTP e-mail: one multipart/alternative (text + HTML) message per alert, STARTTLS/SSL, login after TLS."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import ClassVar, Literal

from pydantic import SecretStr

from alerts.notifiers.base import (
    CONFIG,
    NETWORK,
    OK,
    PAYLOAD,
    RATE_LIMITED,
    TRANSIENT,
    Notifier,
    SendResult,
    as_secret,
    protect,
)
from alerts.notifiers.markup import FONT, title_of, to_html, to_plain
from sentinel.clock import Clock

TlsMode = Literal["starttls", "ssl", "none"]
RATE_LIMIT_BACKOFF = 60.0  # 421: the server is throttling connections or messages
CONFIG_CODES = {530, 534, 535, 501, 503, 553}  # auth required/failed, bad syntax or sender not allowed


def classify_reply(code: int, message: str | bytes, stage: str) -> SendResult:
    """One SMTP reply code at one stage (connect, auth, mail, rcpt, data) as a result."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    detail = f"SMTP {code} at {stage}: {text}"
    if code == 421:
        return SendResult(False, True, RATE_LIMITED, detail, retry_after=RATE_LIMIT_BACKOFF)
    if 400 <= code < 500:
        return SendResult(False, True, TRANSIENT, detail)
    if code in CONFIG_CODES or (code == 550 and stage in ("mail", "rcpt")) or stage in ("connect", "auth"):
        return SendResult(False, False, CONFIG, detail)
    return SendResult(False, False, PAYLOAD, detail)  # 552 too big, 554/550 content rejected, ...


def subject_of(part: str, prefix: str) -> str:
    """`[履约告警][P1] 持续中 同步成功率低于阈值` from the body's heading line."""
    first = next((line for line in part.split("\n") if line.strip()), "")
    tags = "".join(f"[{m.group(2).strip()}]" for m in FONT.finditer(first) if m.group(2).strip())
    rest = title_of(FONT.sub("", first))
    core = prefix.strip("[]")
    if core and rest.startswith(core):
        rest = rest[len(core) :].strip()
    return f"{prefix}{tags} {rest}".strip()


class EmailNotifier(Notifier):
    """Sends each alert as one e-mail through one SMTP submission server; the password is never shown."""

    kind: ClassVar[str] = "email"
    max_bytes: ClassVar[int] = 1_000_000  # one alert = one e-mail; providers accept megabytes
    per_minute: ClassVar[int] = 20  # providers cap daily volume; keep bursts to chat-robot pace

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Iterable[str],
        clock: Clock,
        *,
        tls: TlsMode = "starttls",
        username: str | None = None,
        password: SecretStr | str | None = None,
        timeout: float = 10,
        subject_prefix: str = "[履约告警]",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(clock)
        self.host, self.port, self.tls = host, port, tls
        self.sender = sender
        self.recipients = tuple(recipients)
        self.username = username
        self._password = as_secret(password)
        if self._password is not None:
            protect(self._password.get_secret_value())
        self.timeout = timeout
        self.subject_prefix = subject_prefix
        self.ssl_context = ssl_context  # None: the system's trusted CAs

    def __repr__(self) -> str:
        shown = "****" if self._password is not None else None
        return f"EmailNotifier(host={self.host!r}, port={self.port}, to={list(self.recipients)!r}, password={shown!r})"

    @property
    def target(self) -> str:
        return f"email[{self.host}:{self.port}]"

    def _secrets(self) -> tuple[str, ...]:
        return (self._password.get_secret_value(),) if self._password is not None else ()

    def split(self, body: str) -> list[str]:
        """An e-mail is never split: the whole alert is one message."""
        return [body] if body.strip() else []

    def message(self, part: str) -> EmailMessage:
        """The multipart/alternative message for one alert: plain text first, HTML preferred."""
        msg = EmailMessage()
        msg["Subject"] = subject_of(part, self.subject_prefix)
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = format_datetime(self.clock.now())
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "localhost")
        # 7-bit clean parts: smtplib does not announce 8-bit bodies (BODY=8BITMIME) to the server.
        msg.set_content(to_plain(part) + "\n", cte="quoted-printable")
        msg.add_alternative(to_html(part), subtype="html", cte="quoted-printable")
        return msg

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        if self.tls == "ssl":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._context())
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    def _send_part(self, part: str) -> SendResult:
        msg = self.message(part)
        stage = "connect"
        smtp: smtplib.SMTP | None = None
        try:
            smtp = self._connect()
            smtp.ehlo()
            if self.tls == "starttls":
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if self.username:
                stage = "auth"
                password = self._password.get_secret_value() if self._password is not None else ""
                smtp.login(self.username, password)
            stage = "mail"
            refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=list(self.recipients))
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return classify_reply(code, text, "rcpt")
        except smtplib.SMTPSenderRefused as exc:
            return classify_reply(exc.smtp_code, exc.smtp_error, "mail")
        except smtplib.SMTPDataError as exc:
            return classify_reply(exc.smtp_code, exc.smtp_error, "data")
        except smtplib.SMTPResponseException as exc:  # connect, helo, auth and other replies
            return classify_reply(exc.smtp_code, exc.smtp_error, stage)
        except smtplib.SMTPNotSupportedError as exc:  # no STARTTLS or no AUTH offered
            return SendResult(False, False, CONFIG, f"SMTP at {stage}: {exc}")
        except ssl.SSLCertVerificationError as exc:
            return SendResult(False, False, CONFIG, f"TLS certificate rejected: {exc.verify_message}")
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, refused, timeouts, TLS errors
            return SendResult(False, True, NETWORK, f"{type(exc).__name__} at {stage}: {exc}")
        finally:
            if smtp is not None:
                try:
                    smtp.quit()
                except (smtplib.SMTPException, OSError):
                    smtp.close()
        accepted = len(self.recipients) - len(refused)
        detail = f"250 accepted for {accepted} recipient(s)"
        if refused:
            detail += f"; refused: {', '.join(sorted(refused))}"
        return SendResult(True, False, OK, detail, f"{msg['Message-ID']} {detail}")
