"""`[sources.NAME.api]`: a JSON HTTP API described in config.toml alone (no Python preset).

Where the records are (`records`, a path like `data.items`), how pages follow each other
(`paging`: page numbers, a cursor token from the response, or one request), the modified-since
window (`since_param`/`until_param` in `time_format` and `timezone`) and how requests authenticate
(`auth`: a static header, a query-string key, or a platform signing scheme by name). Templates like
`"Bearer {token}"` read `credentials` (secrets, given through ${VAR}).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

SIGNERS = ("taobao", "jd", "pdd")  # MD5(secret + sorted name+value pairs + secret) with each one's fields
_TEMPLATE_NAME = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _duration(value: Any) -> timedelta:
    from sentinel.config import parse_duration  # one duration syntax for the whole file

    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class ApiConfig(BaseModel):
    """How to read one JSON API: request, paging, modified-since window, authentication."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["GET", "POST"] = "GET"
    body: Literal["query", "json", "form"] = "query"  # where the request parameters go
    params: dict[str, str] = Field(default_factory=dict)  # fixed parameters sent with every request
    headers: dict[str, str] = Field(default_factory=dict)  # fixed headers ({credential} templates allowed)
    records: str = ""  # path of the record list in the response ("" = the response is the list)
    total: str | None = None  # path of the window's total record count, if the API gives it
    ok_path: str | None = None  # path of the envelope's status code (e.g. "status" or "code")
    ok_values: tuple[str, ...] = ("0",)  # the codes meaning success; others are errors
    message_path: str | None = None  # path of the error message shown with a failed code
    # paging
    paging: Literal["page", "cursor", "none"] = "page"
    page_param: str = "page"
    size_param: str | None = "page_size"
    page_base: int = 1
    cursor_param: str = "cursor"  # request parameter carrying the next-page token
    next_cursor: str | None = None  # response path of the next-page token (empty/missing: last page)
    has_more: str | None = None  # response path of a "more pages" flag (optional with next_cursor)
    max_pages: int = Field(default=1000, ge=1)  # per window: a loop guard against a misbehaving API
    # modified-since window
    since_param: str | None = None  # e.g. updated_from; unset: every poll reads everything
    until_param: str | None = None  # e.g. updated_to
    time_format: str = "iso"  # iso, unix, unix_ms or a strftime pattern
    timezone: str | None = None  # zone of the window's times (default: the mapping's timezone)
    window: Duration = timedelta(minutes=30)  # longest window per request
    settle: Duration = timedelta(seconds=10)  # read up to now - settle
    # authentication
    auth: Literal["none", "header", "query", "sign"] = "none"
    auth_name: str | None = None  # header name (header) or query parameter name (query)
    auth_value: str | None = None  # template over credentials, e.g. "Bearer {token}"
    sign: Literal["taobao", "jd", "pdd"] | None = None  # the signing preset of auth = "sign"
    sign_method: str | None = None  # the API method name a signed gateway routes on

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            ZoneInfo(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ApiConfig:
        if self.auth in ("header", "query") and not (self.auth_name and self.auth_value):
            raise ValueError(f"auth = {self.auth!r} needs auth_name and auth_value")
        if self.auth == "sign" and self.sign is None:
            raise ValueError(f"auth = 'sign' needs sign, one of {list(SIGNERS)}")
        if self.paging == "cursor" and self.next_cursor is None:
            raise ValueError("paging = 'cursor' needs next_cursor (the response path of the next token)")
        if self.until_param and not self.since_param:
            raise ValueError("until_param needs since_param")
        return self

    def credential_names(self) -> set[str]:
        """The credentials the templates read."""
        texts = [self.auth_value or "", *self.headers.values()]
        return {name for text in texts for name in _TEMPLATE_NAME.findall(text)}
