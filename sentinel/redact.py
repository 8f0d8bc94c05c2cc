"""Keep credentials that ride in URLs out of third-party logs.

urllib3 logs every request line at DEBUG ("POST /router?access_token=… HTTP/1.1"); channel APIs and
chat robots carry their tokens in the query string. This filter drops query strings from the
arguments of urllib3's records, so turning on DEBUG logging never writes a key to the log.
"""

from __future__ import annotations

import logging
import re

_QUERY = re.compile(r"\?[^\s\"']*")
LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "requests")


class QueryStringFilter(logging.Filter):
    """Replaces `?query` in a record's message and arguments with `?…`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _QUERY.sub("?…", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_QUERY.sub("?…", a) if isinstance(a, str) else a for a in record.args)
        return True


_FILTER = QueryStringFilter()


def install() -> None:
    """Attach the filter to the loggers that print request URLs (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


install()
