"""A token bucket: at most `rate` acquisitions per second on average, bursts up to `burst`.

The clock and sleep are injectable so that tests can count the waiting instead of timing it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*s)?\s*$")


def parse_rate(text: str) -> float:
    """`"10/s"`, `"10"` or `"0.5/s"` -> messages per second (> 0)."""
    match = _RATE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"rate must look like 10/s or 0.5/s (got {text!r})")
    return float(match.group(1))


class RateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("need rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._last = clock()
        self.waited_s = 0.0  # total time spent waiting, for progress output and tests

    def acquire(self) -> None:
        """Blocks until one token is available, then takes it."""
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            wait = (1 - self._tokens) / self.rate
            self.waited_s += wait
            self._sleep(wait)
