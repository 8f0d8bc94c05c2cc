"""Adapting the engine's WeCom markdown (alerts/message.py) to other channels: plain, HTML, mentions."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable

MENTION = re.compile(r"<@([^<>\s]+)>")
FONT = re.compile(r"<font\s+color=\"?([\w#]+)\"?\s*>(.*?)</font>", re.S)
LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
BOLD = re.compile(r"\*\*(.+?)\*\*")
HEADING = re.compile(r"^#{1,6}\s+")
QUOTE = re.compile(r"^>\s?")
# WeCom's three font colours, as CSS colours for e-mail.
COLOURS = {"info": "#2e7d32", "comment": "#888888", "warning": "#e65100"}
_INLINE = re.compile(f"{FONT.pattern}|{LINK.pattern}|{BOLD.pattern}|{MENTION.pattern}", re.S)


def mentions_in(text: str) -> list[str]:
    """The `<@id>` mentions of a body, in order, without duplicates."""
    return list(dict.fromkeys(MENTION.findall(text)))


def with_mentions(body: str, mentions: Iterable[str]) -> str:
    """Append the route's mentions that the body does not carry yet (as WeCom `<@id>`)."""
    missing = [m for m in mentions if f"<@{m}>" not in body]
    if missing and body.strip():
        body = body.rstrip("\n") + "\n" + " ".join(f"<@{m}>" for m in missing)
    return body


def drop_mentions(text: str) -> str:
    """Remove `<@id>` mentions; lines that held only mentions disappear."""
    lines = []
    for line in text.split("\n"):
        stripped = MENTION.sub("", line)
        if stripped.strip() or not line.strip():
            lines.append(stripped.rstrip() if stripped != line else line)
    return "\n".join(lines)


def strip_fonts(text: str) -> str:
    """`<font color="…">x</font>` -> `x`, for receivers that do not render font colours."""
    return FONT.sub(lambda m: m.group(2), text)


def plain_line(line: str, link: Callable[[str, str], str] = lambda t, u: f"{t}：{u}") -> str:
    """One markdown line as plain text: no heading/quote marks, no bold, no fonts, links spelled out."""
    line = QUOTE.sub("", HEADING.sub("", line))
    line = strip_fonts(line)
    line = LINK.sub(lambda m: link(m.group(1), m.group(2)), line)
    return BOLD.sub(lambda m: m.group(1), line)


def to_plain(text: str) -> str:
    """The whole body as plain text (mentions dropped)."""
    return "\n".join(plain_line(line) for line in drop_mentions(text).split("\n"))


def title_of(text: str, limit: int = 120) -> str:
    """The first non-empty line as plain text, cut to `limit` characters."""
    first = next((line for line in text.split("\n") if line.strip()), "")
    flat = " ".join(plain_line(first, lambda t, u: t).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _inline_html(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        colour, inner, label, href, bold = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
        if inner is not None:
            css = COLOURS.get(colour, colour if colour.startswith("#") else "inherit")
            out.append(f'<span style="color:{html.escape(css)}">{_inline_html(inner)}</span>')
        elif label is not None:
            out.append(f'<a href="{html.escape(href)}">{html.escape(label)}</a>')
        elif bold is not None:
            out.append(f"<strong>{_inline_html(bold)}</strong>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def to_html(text: str) -> str:
    """The body as a small self-contained HTML document (headings, quote lines, bold, colours, links)."""
    rows = []
    for line in drop_mentions(text).split("\n"):
        if not line.strip():
            continue
        if HEADING.match(line):
            rows.append(f"<h3>{_inline_html(HEADING.sub('', line))}</h3>")
        elif QUOTE.match(line):
            rows.append(
                '<p style="margin:2px 0;padding-left:8px;border-left:3px solid #ccc">'
                f"{_inline_html(QUOTE.sub('', line))}</p>"
            )
        else:
            rows.append(f"<p>{_inline_html(line)}</p>")
    body = "\n".join(rows)
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8"></head>\n'
        f'<body style="font-family:sans-serif;font-size:14px">\n{body}\n</body></html>\n'
    )
