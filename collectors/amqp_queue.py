"""Queue-depth collector: a RabbitMQ queue's backlog, consumers and oldest-message age over AMQP.

Each sample declares the queue passively (message and consumer counts, nothing created) and, when
messages wait, looks at the head message without consuming it (basic.get, then reject with requeue)
to read its `timestamp` property: the age of the oldest message. Messages stay where they were;
a message without a timestamp counts as age 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from collectors.errors import AuthExpired, SourceConfigError, SourceError, SourceUnavailable


@dataclass(frozen=True)
class QueueSample:
    at: datetime
    messages: int
    consumers: int
    oldest_age_seconds: float

    def health(self) -> dict:
        """The figures as source-health row fields (see sentinel.config.SOURCE_METRICS)."""
        return {
            "queue_messages": float(self.messages),
            "queue_consumers": float(self.consumers),
            "queue_oldest_age_seconds": self.oldest_age_seconds,
        }


class QueueMonitor:
    """Samples one queue; keeps one connection, reopened after a failure."""

    def __init__(self, name: str, url: str, queue: str, timeout: float = 5.0) -> None:
        self.name, self.url, self.queue, self.timeout = name, url, queue, timeout
        self._conn = None
        self._channel = None
        self.last: QueueSample | None = None

    def _open(self):
        import pika

        if self._channel is not None and self._channel.is_open:
            return self._channel
        params = pika.URLParameters(self.url)
        params.socket_timeout = params.blocked_connection_timeout = self.timeout
        self._conn = pika.BlockingConnection(params)
        self._channel = self._conn.channel()
        return self._channel

    def sample(self, now: datetime) -> QueueSample:
        """Read the queue's figures; raises a SourceError naming the queue on failure."""
        import pika

        try:
            channel = self._open()
            declared = channel.queue_declare(self.queue, passive=True)
            messages, consumers = declared.method.message_count, declared.method.consumer_count
            age = 0.0
            if messages:
                method, props, _body = channel.basic_get(self.queue, auto_ack=False)
                if method is not None:
                    channel.basic_reject(method.delivery_tag, requeue=True)
                    if props.timestamp is not None:
                        oldest = datetime.fromtimestamp(props.timestamp, UTC)
                        age = max(0.0, (now - oldest).total_seconds())
        except pika.exceptions.ProbableAuthenticationError as exc:
            self.close()
            raise AuthExpired(
                self.name, f"queue {self.queue}: login refused ({type(exc).__name__})"
            ) from None
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.close()
            if exc.reply_code == 404:
                raise SourceConfigError(self.name, f"queue {self.queue}: no such queue") from None
            raise SourceError(self.name, f"queue {self.queue}: channel closed ({exc.reply_code})") from None
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise SourceUnavailable(self.name, f"queue {self.queue}: {type(exc).__name__}") from None
        self.last = QueueSample(now, messages, consumers, age)
        return self.last

    def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail any way
                pass
