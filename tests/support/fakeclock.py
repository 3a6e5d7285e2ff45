"""Time for API client tests: it passes only when someone sleeps, and every sleep is recorded."""

from __future__ import annotations

import threading
import time


class FakeClock:
    """Time that passes only when someone sleeps; every sleep is recorded. Thread-safe."""

    def __init__(self) -> None:
        self.now = time.time()
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds
