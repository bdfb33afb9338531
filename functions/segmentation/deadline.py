"""The request deadline: how long one delivery may keep calling Cloud Storage.

Pub/Sub waits for the push request's answer until the subscription's ack deadline, which
Terraform sets to the function timeout (REQUEST_TIMEOUT_SECONDS). A request that is still
retrying storage calls after that is retried by Pub/Sub anyway (the attempt is spent) while it
goes on working. So `handle_cloud_event` makes one `Deadline` per request,
`REQUEST_TIMEOUT_SECONDS - margin_seconds(...)` from its start, and every storage call of the
request (model loading included) is bounded by it: `bound(store, deadline)` gives the store
view the request uses. A call is never started once the deadline has passed: it raises
`RequestDeadlineError` (transient, so Pub/Sub redelivers) without touching the network.

The margin (5 % of the timeout, at least 10 s, at most half of it: 15 s of the default 300 s)
leaves time to log the summary line and answer, and covers what happens before the function
sees the request (a cold start's imports), which the ack deadline counts and we cannot measure.

The clock is injectable (`time.monotonic` by default): nothing else in the request path reads
the time to decide how long to wait. Python 3.11-compatible (model.py imports it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from segmentation.errors import RequestDeadlineError

if TYPE_CHECKING:
    from segmentation.storage import ObjectInfo, ObjectStore

MARGIN_FRACTION = 0.05
MIN_MARGIN_SECONDS = 10.0


def margin_seconds(timeout_seconds: float) -> float:
    """What a request keeps back from its timeout: 5 %, at least 10 s, at most half of it."""
    return min(max(MIN_MARGIN_SECONDS, MARGIN_FRACTION * timeout_seconds), timeout_seconds / 2)


@dataclass(frozen=True)
class Deadline:
    """A point on `clock` (seconds, monotonic) after which no storage call is started."""

    expires_at: float
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    @classmethod
    def after(cls, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> Deadline:
        """The deadline `seconds` from now on `clock`."""
        return cls(clock() + seconds, clock)

    @classmethod
    def for_request(
        cls, timeout_seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> Deadline:
        """The deadline of a request that started now and must be answered within
        `timeout_seconds` (REQUEST_TIMEOUT_SECONDS): that less `margin_seconds`."""
        return cls.after(timeout_seconds - margin_seconds(timeout_seconds), clock=clock)

    def remaining(self) -> float:
        """Seconds left (0 when the deadline has passed)."""
        return max(0.0, self.expires_at - self.clock())

    def check(self, what: str) -> float:
        """The seconds left for `what` (above 0); raises `RequestDeadlineError` when none are."""
        left = self.expires_at - self.clock()
        if left <= 0:
            raise RequestDeadlineError(
                f"{what}: not started, the request deadline passed {-left:.1f} s ago"
            )
        return left


def bound(store: ObjectStore, deadline: Deadline | None) -> ObjectStore:
    """`store` as one request uses it: every call ends by `deadline` (None: `store` itself).

    A store with its own `within(deadline)` (GcsObjectStore: it also shortens the library's
    retries and timeouts) gives that view; any other store (the in-memory fake) is wrapped in a
    `DeadlineGuard`, which refuses to start a call after the deadline."""
    if deadline is None:
        return store
    within = getattr(store, "within", None)
    if callable(within):
        return within(deadline)
    return DeadlineGuard(store, deadline)


class DeadlineGuard:
    """An `ObjectStore` that checks `deadline` before each call of the store it wraps."""

    def __init__(self, store: ObjectStore, deadline: Deadline) -> None:
        self.store = store
        self.deadline = deadline

    def stat(self, bucket: str, name: str, *, generation: int | None = None) -> ObjectInfo | None:
        self.deadline.check(f"stat gs://{bucket}/{name}")
        return self.store.stat(bucket, name, generation=generation)

    def read(
        self, bucket: str, name: str, *, generation: int | None = None, limit: int | None = None
    ) -> bytes:
        self.deadline.check(f"read gs://{bucket}/{name}")
        return self.store.read(bucket, name, generation=generation, limit=limit)

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        if_generation_match: int,
    ) -> ObjectInfo:
        self.deadline.check(f"write gs://{bucket}/{name}")
        return self.store.write(
            bucket,
            name,
            data,
            content_type=content_type,
            metadata=metadata,
            if_generation_match=if_generation_match,
        )

    def delete(self, bucket: str, name: str, *, if_generation_match: int) -> None:
        self.deadline.check(f"delete gs://{bucket}/{name}")
        self.store.delete(bucket, name, if_generation_match=if_generation_match)
