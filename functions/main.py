"""Cloud Function entry point (2nd gen, python312): `segment_image`.

Deploy with Terraform from the repository root (`terraform apply`, see docs/deploy.md): it builds
this directory as a function without an Eventarc trigger and delivers uploads through an explicit
Pub/Sub push subscription with an OIDC token, a retry policy and a dead-letter topic
(infra/messaging/main.tf). Do not deploy it with `gcloud functions deploy --trigger-topic`: that
trigger's Eventarc-managed subscription has no dead-letter policy, so failing uploads would be
retried for a day and then dropped.

Settings are read and validated here, at cold start: a bad variable fails the deployment with an
error naming it. The storage client and the model are created lazily on first use, once per
instance; tests and the local stack replace `STORE` / `MODEL` on this module. `MODEL` is the
stable track (MODEL_URI, re-resolving `latest` every MODEL_REFRESH_SECONDS) plus the optional
canary (CANARY_MODEL_VERSION for CANARY_PERCENT of uploads): segmentation.model.serving_models.
"""

from __future__ import annotations

from typing import Any

import flask
import functions_framework
from segmentation import imaging, logs, push
from segmentation.model import serving_models
from segmentation.pipeline import handle_cloud_event
from segmentation.settings import load_settings
from segmentation.storage import GcsObjectStore

SETTINGS = load_settings()
logs.configure(SETTINGS.log_level)
imaging.configure_pillow(SETTINGS.max_image_pixels)
STORE = GcsObjectStore()
MODEL = serving_models(
    SETTINGS.model_uri,
    store=STORE,
    cache_dir=SETTINGS.model_cache_dir,
    num_threads=SETTINGS.num_threads,
    pool_size=SETTINGS.concurrency,  # one interpreter per request in flight
    refresh_seconds=SETTINGS.model_refresh_seconds,
    canary_version=SETTINGS.canary_model_version,
    canary_percent=SETTINGS.canary_percent,
)


@functions_framework.cloud_event
def segment_image(cloud_event: Any) -> None:
    """Segments the uploaded image a Pub/Sub-delivered GCS notification names.

    Returns (ack) when done or when retrying cannot help; raises (Pub/Sub redelivers) on
    transient, configuration and unexpected errors.
    """
    handle_cloud_event(cloud_event, store=STORE, model=MODEL, settings=SETTINGS)


@functions_framework.errorhandler(400)
def segment_push_without_data(error: Exception) -> Any:
    """functions-framework answers 400 to a push body whose message has no `data` (attributes
    only, e.g. payloadFormat=NONE); Pub/Sub would redeliver it until it is dead-lettered. Such a
    body is handled like any delivery (segmentation/push.py); any other bad request stays 400."""
    cloud_event = push.cloud_event_from_push(flask.request.get_data(), flask.request.path)
    if cloud_event is None:
        return error
    segment_image(cloud_event)
    return "OK"
