"""Job events for whoever follows the queue (the `/queue/events` stream, the UI): one publisher, many subscribers.

An event is a small dict: {"type", "job", ...}. Types: "queued" (with "position"), "started", "progress" ("step",
"steps", "job_no", "job_count", "progress", "eta", "textinfo"), "image" ("path"), "finished" ("state", "error",
"images"). Subscribers get them on their own queue; one that stops reading loses its oldest progress events
once it holds `limit` events (never the other kinds), and never costs the worker any time.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable

DROPPABLE = ("progress", "preview")


class Subscription:
    def __init__(self, bus: "EventBus", accept: Callable[[dict], bool] | None, limit: int):
        self._bus, self._accept, self._limit = bus, accept, limit
        self._events: deque[dict] = deque()
        self._ready = threading.Condition()

    def offer(self, event: dict) -> None:
        if self._accept is not None and not self._accept(event):
            return
        with self._ready:
            if len(self._events) >= self._limit:
                self._drop_oldest_progress()
            self._events.append(event)
            self._ready.notify()

    def _drop_oldest_progress(self) -> None:
        """A slow reader loses its oldest progress events; the moments (queued, started, image, finished) stay."""
        for index, old in enumerate(self._events):
            if old.get("type") in DROPPABLE:
                del self._events[index]
                return

    def get(self, timeout: float | None = None) -> dict | None:
        """The next event, or None after `timeout` seconds without one."""
        with self._ready:
            if not self._events:
                self._ready.wait(timeout)
            return self._events.popleft() if self._events else None

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *_) -> None:
        self.close()


class EventBus:
    def __init__(self):
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []

    def subscribe(self, accept: Callable[[dict], bool] | None = None, limit: int = 1000) -> Subscription:
        subscription = Subscription(self, accept, limit)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def publish(self, event: dict) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            subscription.offer(event)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)
