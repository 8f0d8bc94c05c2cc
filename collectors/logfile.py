"""Tail a JSON-lines log file with a durable cursor that survives rotation and truncation.

The cursor is JSON: `{"inode", "offset", "line", "size", "head", "head_len"}` where `head` hashes
the file's first `head_len` bytes, so a recycled inode or a truncated file is not mistaken for the
file we were reading. On rotation (`path` renamed to `path.1`, a new `path` created) the rotated
file is finished from the cursor first, then the new file is read from its start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from collectors.errors import SchemaError, SourceUnavailable
from collectors.mapping import RecordMapper
from collectors.types import Batch, Quarantined
from sentinel.config import SourceConfig

log = logging.getLogger("collectors.logfile")
HEAD_BYTES = 256  # how much of the file's start identifies it
CHUNK = 1 << 20
MAX_RAW = 65536  # longest raw text kept in quarantine


@dataclass(frozen=True)
class FilePosition:
    """Where reading stopped: after `line` lines, at byte `offset` of the file with `inode`."""

    inode: int
    offset: int = 0
    line: int = 0
    size: int = 0
    head: str = ""
    head_len: int = 0

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | None) -> FilePosition | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(**{k: data[k] for k in ("inode", "offset", "line", "size", "head", "head_len")})
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring unreadable log cursor %r; reading the file from its start", text[:200])
            return None


def _head(fd: int, length: int) -> str:
    return hashlib.sha1(os.pread(fd, length, 0)).hexdigest() if length else ""


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _same_head(path: Path, pos: FilePosition) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return os.fstat(fd).st_size >= pos.offset and _head(fd, pos.head_len) == pos.head
    finally:
        os.close(fd)


class LogFileCollector:
    """Reads `cfg.path` line by line; each batch carries the cursor just after its last line."""

    def __init__(
        self, name: str, cfg: SourceConfig, mapper: RecordMapper | None = None, batch_lines: int | None = None
    ) -> None:
        if not cfg.path:
            raise ValueError(f"sources.{name}.path: field required for kind 'logfile'")
        self.name = name
        self.cfg = cfg
        self.path = Path(cfg.path)
        self.rotated = self.path.with_name(self.path.name + ".1")
        self.mapper = mapper or RecordMapper(name, cfg.mapping, channel=cfg.channel)
        self.batch_lines = batch_lines or cfg.page_size * 10
        self._verify = None
        if cfg.signature is not None:
            from collectors.push import VERIFIERS

            salt = cfg.credentials["salt"].get_secret_value() if "salt" in cfg.credentials else ""
            if not salt:
                raise ValueError(
                    f"sources.{name}.credentials.salt: required to verify {cfg.signature} signatures"
                )
            verify = VERIFIERS[cfg.signature]
            self._verify = lambda key, record: verify(name, key, record, salt)

    def __repr__(self) -> str:
        return f"LogFileCollector({self.name!r}, {str(self.path)!r})"

    def poll(self, cursor: str | None, now: datetime) -> Iterator[Batch]:
        """Read complete lines past `cursor`, finishing a rotated file before the new one."""
        pos = FilePosition.loads(cursor)
        current = _stat(self.path)
        if (
            pos is not None
            and current is not None
            and current.st_ino == pos.inode
            and _same_head(self.path, pos)
        ):
            yield from self._read(self.path, pos, final=False)
            return
        # Finish the rotated file first: from the cursor, or whole on the very first poll.
        if (pos is None and self.rotated.exists()) or (pos is not None and _same_head(self.rotated, pos)):
            moved_on = current is not None and current.st_size > 0
            finished = yield from self._read(self.rotated, pos, final=moved_on)
            if not finished:
                return  # the writer may still complete the rotated file's last line
        elif pos is not None and current is not None:
            log.warning("%s: %s was truncated or replaced; reading it from the start", self.name, self.path)
        elif pos is not None:
            raise SourceUnavailable(
                self.name, f"log file {self.path} is gone (and no rotated {self.rotated.name})"
            )
        if current is None:
            return  # nothing written yet
        yield from self._read(self.path, None, final=False)

    def _read(self, path: Path, pos: FilePosition | None, final: bool) -> Iterator[Batch]:
        """Batches of lines from `pos` (None: the start); returns True when the file is exhausted."""
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise SourceUnavailable(self.name, f"log file {path} disappeared while reading") from None
        with f:
            st = os.fstat(f.fileno())
            moved = pos is None or pos.inode != st.st_ino  # a new file, or a copy made by copytruncate
            pos = pos or FilePosition(st.st_ino)
            f.seek(pos.offset)
            offset, line_no = pos.offset, pos.line
            batch, lines = Batch(self.name), 0
            pending = b""
            while chunk := f.read(CHUNK):
                data, start = pending + chunk, 0
                while (nl := data.find(b"\n", start)) >= 0:
                    raw = data[start:nl]
                    start = nl + 1
                    offset += len(raw) + 1
                    line_no += 1
                    lines += 1
                    self._consume(batch, raw, line_no, st.st_ino)
                    if lines >= self.batch_lines:
                        batch.cursor = self._cursor(f.fileno(), st.st_ino, offset, line_no)
                        yield batch
                        batch, lines, moved = Batch(self.name), 0, False
                pending = data[start:]
            if pending and final:  # the writer has moved on: the unterminated last line is complete
                offset += len(pending)
                line_no += 1
                lines += 1
                self._consume(batch, pending, line_no, st.st_ino)
                pending = b""
            if lines or moved:
                batch.cursor = self._cursor(f.fileno(), st.st_ino, offset, line_no)
                yield batch
        return not pending

    def _cursor(self, fd: int, inode: int, offset: int, line: int) -> str:
        head_len = min(HEAD_BYTES, offset)
        size = os.fstat(fd).st_size
        return FilePosition(inode, offset, line, size, _head(fd, head_len), head_len).dumps()

    def _consume(self, batch: Batch, raw: bytes, line_no: int, inode: int) -> None:
        """Map one line into `batch` (observations, or a quarantined record naming the problem)."""
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            return
        batch.records += 1
        key = f"{inode}:{line_no}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            shown = raw[:MAX_RAW].decode("utf-8", errors="replace")
            batch.quarantined.append(
                Quarantined(self.name, key, "$", f"line {line_no} is not valid UTF-8: {exc.reason}", shown)
            )
            return
        try:
            record = json.loads(text)
        except ValueError as exc:
            reason = f"line {line_no} is not valid JSON: {getattr(exc, 'msg', exc)}"
            batch.quarantined.append(Quarantined(self.name, key, "$", reason, text[:MAX_RAW]))
            return
        try:
            if self._verify is not None:
                record = self._verify(key, record)
            observations = self.mapper.map(record)
        except SchemaError as exc:
            # A record without an id is named by its line: two equal bad lines are two records.
            record = key if exc.record.startswith("sha1:") else exc.record
            reason = f"line {line_no}: {exc.reason}"  # where to find it in the log, whatever its id
            batch.quarantined.append(Quarantined(self.name, record, exc.field, reason, text[:MAX_RAW]))
            return
        batch.observations.extend(observations)
        for o in observations:
            if batch.max_event_at is None or o.at > batch.max_event_at:
                batch.max_event_at = o.at
