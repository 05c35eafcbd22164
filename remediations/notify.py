"""Chat notifications through apprise: queued, retried, counted, never in the way.

People learn what the receiver decided from chat: the plan before it acts, the outcome
after, a refusal with the guard's reason, the runbook link. apprise speaks Slack,
Teams, Mattermost, e-mail and dozens more behind one URL syntax, so operators pick
their channel in a file (the URLs hold webhook secrets) without code changes.

A chat service that is down must never hold up a remediation, so :meth:`Notifier.post`
only queues; a worker task sends, one URL at a time so that one failing service does
not make the others receive duplicates, retrying each with jittered exponential
backoff. Outcomes are counted in ``kubeballast_notifications_total{outcome}``: ``sent``,
``retried`` (an attempt failed, another follows), ``failed`` (attempts used up) and
``dropped`` (the queue was full). On shutdown the worker gets a moment to drain.

apprise loads its plugins on first use, and one of them imports the standard library's
deprecated ``imghdr``; that third-party import warning is silenced around the load
(our tests turn warnings into errors, and there is nothing here to fix).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter

from kubeballast.core.config import NotificationsConfig
from kubeballast.core.errors import ConfigError

__all__ = ["Message", "Notifier", "load_apprise", "read_urls_file"]

log = logging.getLogger(__name__)

MessageKind = Literal["info", "success", "warning", "failure"]


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    """Markdown."""
    kind: MessageKind = "info"


def load_apprise() -> Any:
    """The apprise module with its plugins loaded (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise
        from apprise.plugins import N_MGR

        N_MGR.load_modules()  # type: ignore[no-untyped-call]
    return apprise


def read_urls_file(path: str | None) -> list[str]:
    """The apprise URLs in ``path``: one per line, ``#`` comments and blank lines skipped."""
    if path is None:
        return []
    key = "receiver.remediations.notifications.urls_file"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}", key_path=key) from None
    urls = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            urls.append(line)
    return urls


class Notifier:
    """Sends :class:`Message` s to every URL, from a queue, in :meth:`run`."""

    def __init__(
        self,
        urls: Sequence[str],
        config: NotificationsConfig,
        *,
        registry: CollectorRegistry | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=config.max_queue)
        self._idle = asyncio.Event()
        self._idle.set()
        self._targets: list[tuple[str, Any]] = []
        self.counter = Counter(
            "kubeballast_notifications",
            "Chat notifications by outcome: sent, retried (an attempt failed), failed "
            "(attempts used up), dropped (queue full).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("sent", "retried", "failed", "dropped"):
            self.counter.labels(outcome)
        if urls:
            apprise = load_apprise()
            self._apprise = apprise
            for position, url in enumerate(urls, start=1):
                target = apprise.Apprise()
                if not target.add(url):
                    # Name the line, never the URL: it holds the webhook's secret.
                    raise ConfigError(
                        f"line {position}: not an apprise URL apprise understands",
                        key_path="receiver.remediations.notifications.urls_file",
                    )
                self._targets.append((f"url#{position}", target))
        else:
            log.info("notifications: no apprise URLs; decisions are only logged and recorded")

    @property
    def enabled(self) -> bool:
        return bool(self._targets)

    def post(self, message: Message) -> None:
        """Queue ``message``; returns at once (a full queue drops it, counted)."""
        if not self._targets:
            return
        try:
            self._queue.put_nowait(message)
            self._idle.clear()
        except asyncio.QueueFull:
            self.counter.labels("dropped").inc()
            log.error("notifications: queue full, dropped %r", message.title)

    async def run(self) -> None:
        """Send queued messages until cancelled."""
        while True:
            message = await self._queue.get()
            try:
                for name, target in self._targets:
                    await self._send(name, target, message)
            finally:
                self._queue.task_done()
                if self._queue.empty():
                    self._idle.set()

    async def drain(self, within: float) -> None:
        """Wait up to ``within`` seconds for the queue to empty (at shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), within)

    async def _send(self, name: str, target: Any, message: Message) -> None:
        notify_type = {
            "info": self._apprise.NotifyType.INFO,
            "success": self._apprise.NotifyType.SUCCESS,
            "warning": self._apprise.NotifyType.WARNING,
            "failure": self._apprise.NotifyType.FAILURE,
        }[message.kind]
        delay = self.config.backoff_seconds
        for attempt in range(1, self.config.attempts + 1):
            try:
                ok = bool(
                    await asyncio.wait_for(
                        target.async_notify(
                            body=message.body,
                            title=message.title,
                            notify_type=notify_type,
                            body_format=self._apprise.NotifyFormat.MARKDOWN,
                        ),
                        self.config.timeout_seconds,
                    )
                )
            except TimeoutError:
                ok = False
            except Exception as error:
                # apprise plugins raise whatever their HTTP library raises; to us any
                # of it is one failed attempt, retried like a refusal.
                log.warning("notifications: %s raised %s", name, type(error).__name__)
                ok = False
            if ok:
                self.counter.labels("sent").inc()
                return
            if attempt == self.config.attempts:
                break
            self.counter.labels("retried").inc()
            await self._sleep(delay * self._rng.uniform(0.5, 1.0))
            delay *= 2
        self.counter.labels("failed").inc()
        log.error(
            "notifications: %r not delivered to %s after %d attempts",
            message.title,
            name,
            self.config.attempts,
        )
