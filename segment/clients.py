"""Cloud clients for real Google Cloud or the local emulators, chosen explicitly.

Emulator endpoints are passed in (not read from the process environment behind the caller's
back), so one process can talk to several stacks, and tests need not mutate `os.environ`.
`from_env()` reads the usual variables for the command line: STORAGE_EMULATOR_HOST and
PUBSUB_EMULATOR_HOST.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

DEFAULT_PROJECT = "local-project"


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
            storage_emulator=env.get("STORAGE_EMULATOR_HOST") or None,
            pubsub_emulator=env.get("PUBSUB_EMULATOR_HOST") or None,
            project=env.get("GOOGLE_CLOUD_PROJECT") or env.get("CLOUDSDK_CORE_PROJECT") or None,
        )

    @property
    def uses_emulators(self) -> bool:
        return bool(self.storage_emulator or self.pubsub_emulator)


def storage_client(endpoints: Endpoints) -> Any:
    from google.cloud import storage

    if endpoints.storage_emulator:
        from google.auth.credentials import AnonymousCredentials

        url = endpoints.storage_emulator
        if "://" not in url:
            url = f"http://{url}"
        return storage.Client(
            project=endpoints.project or DEFAULT_PROJECT,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": url},
        )
    return storage.Client(project=endpoints.project)


def publisher_client(endpoints: Endpoints) -> Any:
    from google.cloud import pubsub_v1

    if endpoints.pubsub_emulator:
        import grpc
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        channel = grpc.insecure_channel(endpoints.pubsub_emulator)
        return pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=channel))
    return pubsub_v1.PublisherClient()


def subscriber_client(endpoints: Endpoints) -> Any:
    from google.cloud import pubsub_v1

    if endpoints.pubsub_emulator:
        import grpc
        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

        channel = grpc.insecure_channel(endpoints.pubsub_emulator)
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    return pubsub_v1.SubscriberClient()
