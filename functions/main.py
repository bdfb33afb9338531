"""Cloud Function entry point (2nd gen, python312): `segment_image`.

Deploy: gcloud functions deploy segment-image --gen2 --runtime=python312 --source=functions \
    --entry-point=segment_image --trigger-topic=<prefix>-uploads ...

Settings are read and validated here, at cold start: a bad variable fails the deployment with an
error naming it. The storage client and the model are created lazily on first use, once per
instance; tests and the local stack replace `STORE` / `MODEL` on this module.
"""

from __future__ import annotations

from typing import Any

import functions_framework
from segmentation import imaging, logs
from segmentation.model import LazyModel, load_model
from segmentation.pipeline import handle_cloud_event
from segmentation.settings import load_settings
from segmentation.storage import GcsObjectStore

SETTINGS = load_settings()
logs.configure(SETTINGS.log_level)
imaging.configure_pillow(SETTINGS.max_image_pixels)
STORE = GcsObjectStore()
MODEL = LazyModel(
    lambda: load_model(
        SETTINGS.model_uri,
        store=STORE,
        cache_dir=SETTINGS.model_cache_dir,
        num_threads=SETTINGS.num_threads,
    )
)


@functions_framework.cloud_event
def segment_image(cloud_event: Any) -> None:
    """Segments the uploaded image a Pub/Sub-delivered GCS notification names.

    Returns (ack) when done or when retrying cannot help; raises (Pub/Sub redelivers) on
    transient, configuration and unexpected errors.
    """
    handle_cloud_event(cloud_event, store=STORE, model=MODEL, settings=SETTINGS)
