"""Cloud clients for real Google Cloud or the local emulators, chosen explicitly.

Emulator endpoints are passed in (not read from the process environment behind the caller's
back), so one process can talk to several stacks, and tests need not mutate `os.environ`.
`from_env()` reads the usual variables for the command line: STORAGE_EMULATOR_HOST and
PUBSUB_EMULATOR_HOST.

Network failures are bounded: every Cloud Storage call `segment` makes passes `storage_retry()`
and `STORAGE_TIMEOUT` (an endpoint that refuses or never accepts a connection fails at once,
or after `CONNECT_TIMEOUT_S`, instead of being retried for two minutes), an emulated Pub/Sub
channel must connect within `CONNECT_TIMEOUT_S`, and `network_failure` turns what remains into
one line naming the endpoint and the variable that chose it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions

DEFAULT_PROJECT = "local-project"
STORAGE_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
PUBSUB_EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"
STORAGE_API = "https://storage.googleapis.com"
PUBSUB_API = "pubsub.googleapis.com:443"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
RETRY_TIMEOUT_S = 60.0  # retries of 429/5xx/dropped connections, all attempts together
STORAGE_TIMEOUT = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)


@dataclass(frozen=True)
class Endpoints:
    """Where the clients go: None means the real service."""

    storage_emulator: str | None = None  # http://127.0.0.1:PORT
    pubsub_emulator: str | None = None  # 127.0.0.1:PORT
    project: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Endpoints:
        env = os.environ if environ is None else environ
        return cls(
            storage_emulator=env.get(STORAGE_EMULATOR_ENV) or None,
            pubsub_emulator=env.get(PUBSUB_EMULATOR_ENV) or None,
            project=env.get("GOOGLE_CLOUD_PROJECT") or env.get("CLOUDSDK_CORE_PROJECT") or None,
        )

    @property
    def uses_emulators(self) -> bool:
        return bool(self.storage_emulator or self.pubsub_emulator)

    @property
    def storage_url(self) -> str:
        url = self.storage_emulator or STORAGE_API
        return url if "://" in url else f"http://{url}"


class EndpointUnreachableError(Exception):
    """A service endpoint could not be reached; the message names it (one line)."""


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception inside it: causes, contexts, arguments, urllib3's reasons."""
    found: list[BaseException] = []
    pending: list[Any] = [exc]
    while pending:
        item = pending.pop(0)
        if not isinstance(item, BaseException) or any(item is seen for seen in found):
            continue
        found.append(item)
        if isinstance(item, urllib3.exceptions.MaxRetryError):
            pending.append(item.reason)
        pending += [item.__cause__, item.__context__, *item.args]
    return found


_CANNOT_CONNECT = (
    requests.exceptions.ConnectTimeout,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
)


def cannot_connect(exc: BaseException) -> bool:
    """True when `exc` says no connection was established (refused, unknown host, connect
    timeout): the endpoint is wrong or down, which retrying for minutes does not fix."""
    return any(isinstance(item, _CANNOT_CONNECT) for item in _chain(exc))


@functools.cache
def storage_retry() -> Any:
    """The retry policy to pass to every Cloud Storage call (with `timeout=STORAGE_TIMEOUT`):
    the library's transient errors (429, 5xx, dropped connections) are retried for at most
    RETRY_TIMEOUT_S; a connection that cannot be made is not retried."""
    from google.cloud.storage.retry import DEFAULT_RETRY, _should_retry

    def retryable(exc: BaseException) -> bool:
        return _should_retry(exc) and not cannot_connect(exc)

    return DEFAULT_RETRY.with_predicate(retryable).with_timeout(RETRY_TIMEOUT_S)


def storage_client(endpoints: Endpoints) -> Any:
    from google.cloud import storage

    if endpoints.storage_emulator:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=endpoints.project or DEFAULT_PROJECT,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoints.storage_url},
        )
    return storage.Client(project=endpoints.project)


def _emulator_channel(endpoints: Endpoints) -> Any:
    """An insecure channel to the Pub/Sub emulator, connected within CONNECT_TIMEOUT_S."""
    import grpc

    channel = grpc.insecure_channel(endpoints.pubsub_emulator)
    try:
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
    except grpc.FutureTimeoutError:
        channel.close()
        raise EndpointUnreachableError(
            f"cannot reach the Pub/Sub emulator at {endpoints.pubsub_emulator} "
            f"({PUBSUB_EMULATOR_ENV}): no connection within {CONNECT_TIMEOUT_S:g}s"
        ) from None
    return channel


def publisher_client(endpoints: Endpoints) -> Any:
    from google.cloud import pubsub_v1

    if endpoints.pubsub_emulator:
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        channel = _emulator_channel(endpoints)
        return pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=channel))
    return pubsub_v1.PublisherClient()


def subscriber_client(endpoints: Endpoints) -> Any:
    from google.cloud import pubsub_v1

    if endpoints.pubsub_emulator:
        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

        channel = _emulator_channel(endpoints)
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    return pubsub_v1.SubscriberClient()


def network_failure(exc: BaseException, endpoints: Endpoints) -> str | None:
    """One line for a network failure talking to `endpoints`, or None if `exc` is not one.

    Storage speaks HTTP (requests/urllib3, google-auth for tokens), Pub/Sub gRPC (api_core's
    ServiceUnavailable / DeadlineExceeded, and a publish future's TimeoutError)."""
    if isinstance(exc, EndpointUnreachableError):
        return str(exc)
    if isinstance(exc, api_exceptions.RetryError) and exc.cause is not None:
        detail = network_failure(exc.cause, endpoints)
        return f"{detail} (retried for {RETRY_TIMEOUT_S:g}s)" if detail else None
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return f"cannot reach {_storage_where(endpoints)}: {_reason(exc)}"
    if isinstance(exc, auth_exceptions.TransportError):
        return f"cannot reach Google's token service (no network?): {_reason(exc)}"
    grpc_failure = api_exceptions.ServiceUnavailable | api_exceptions.DeadlineExceeded
    # (an HTTP answer, such as storage's 503, came from an endpoint that was reached)
    http_answer = isinstance(getattr(exc, "response", None), requests.Response)
    if isinstance(exc, grpc_failure | TimeoutError) and not http_answer:
        what = exc.message if isinstance(exc, api_exceptions.GoogleAPICallError) else "timed out"
        return f"cannot reach {_pubsub_where(endpoints)}: {type(exc).__name__}: {what}"
    return None


def _storage_where(endpoints: Endpoints) -> str:
    if endpoints.storage_emulator:
        return f"the storage emulator at {endpoints.storage_url} ({STORAGE_EMULATOR_ENV})"
    return (
        f"Cloud Storage at {STORAGE_API} ({STORAGE_EMULATOR_ENV} is not set; set it for an "
        "emulator)"
    )


def _pubsub_where(endpoints: Endpoints) -> str:
    if endpoints.pubsub_emulator:
        return f"the Pub/Sub emulator at {endpoints.pubsub_emulator} ({PUBSUB_EMULATOR_ENV})"
    return f"Pub/Sub at {PUBSUB_API} ({PUBSUB_EMULATOR_ENV} is not set; set it for an emulator)"


def _reason(exc: BaseException) -> str:
    """A few words for a requests/urllib3 error: "Connection refused", "unknown host", ..."""
    chain = _chain(exc)
    for item in chain:
        # (urllib3's NewConnectionError is a ConnectTimeoutError too: test it first)
        if isinstance(item, urllib3.exceptions.NameResolutionError):
            return "unknown host"
        if isinstance(item, urllib3.exceptions.NewConnectionError):
            cause = next((c for c in _chain(item) if isinstance(c, OSError) and c.strerror), None)
            return cause.strerror if cause is not None else "no connection"
        if isinstance(
            item, requests.exceptions.ConnectTimeout | urllib3.exceptions.ConnectTimeoutError
        ):
            return f"no connection within {CONNECT_TIMEOUT_S:g}s"
        if isinstance(item, requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError):
            return f"no answer within {READ_TIMEOUT_S:g}s"
    for item in chain:
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
    return type(exc).__name__
