"""Job events for whoever follows the queue (the `/queue/events` stream, the UI): one publisher, many subscribers.

An event is a small dict: {"type", "job", ...}. Types: "queued" (with "position"), "started", "progress" ("step",
"steps", "job_no", "job_count", "progress", "eta", "textinfo"), "image" ("path"), "finished" ("state", "error",
"images"). Subscribers get them on their own bounded queue; a subscriber that stops reading loses its oldest
progress events, never the worker's time.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable


class Subscription:
    def __init__(self, bus: "EventBus", accept: Callable[[dict], bool] | None, limit: int):
        self._bus, self._accept = bus, accept
        self._events: queue.Queue = queue.Queue(maxsize=limit)

    def offer(self, event: dict) -> None:
        if self._accept is not None and not self._accept(event):
            return
        while True:
            try:
                self._events.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._events.get_nowait()  # drop the oldest: a slow reader never blocks the worker
                except queue.Empty:
                    pass

    def get(self, timeout: float | None = None) -> dict | None:
        """The next event, or None after `timeout` seconds without one."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

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
