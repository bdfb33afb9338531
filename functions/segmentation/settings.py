"""Settings: one frozen dataclass built from environment variables at cold start.

Every variable is documented in functions/README.md. A bad value raises `SettingsError` naming
the variable, so a misconfigured deployment fails at start-up instead of on the first upload.
An empty optional variable counts as unset (Terraform templates often render empty strings).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from segmentation import memory
from segmentation.contract import LATEST_SEGMENT, SAFE_COMPONENT
from segmentation.errors import SettingsError

DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# One interpreter thread per vCPU: the deployed instance has 1 vCPU (infra function_cpu), and a
# second thread on one vCPU only contends (docs/performance.md). Raise it with the vCPU count.
DEFAULT_NUM_THREADS = 1
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_MODEL_CACHE_DIR = "/tmp/segmentation-models"
# A warm instance re-reads `latest.json` at most this often (0: never; a pinned MODEL_URI never).
DEFAULT_MODEL_REFRESH_SECONDS = 300
DEFAULT_CANARY_PERCENT = 0.0
# OBJECT_DELETE / OBJECT_ARCHIVE of an upload removes its outputs (functions/README.md, Output).
DEFAULT_DELETE_OUTPUTS_ON_DELETE = True
# Requests one instance serves at once (Terraform's function concurrency): it sizes the
# interpreter pool and the memory budget (segmentation/memory.py).
DEFAULT_CONCURRENCY = 1
MAX_CONCURRENCY = 1000  # Cloud Run's limit
# The push subscription's ack deadline (= the function timeout): every retry of a request ends
# before it, so a redelivery never overlaps a request still retrying.
DEFAULT_REQUEST_TIMEOUT_SECONDS = 300
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_NUM_THREADS = 64

# https://cloud.google.com/storage/docs/buckets#naming (dotted names may be up to 222 characters).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclass(frozen=True)
class Settings:
    """The function's configuration (see functions/README.md for each field's variable)."""

    output_bucket: str
    model_uri: str
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    num_threads: int = DEFAULT_NUM_THREADS
    log_level: str = DEFAULT_LOG_LEVEL
    model_cache_dir: str = DEFAULT_MODEL_CACHE_DIR
    model_refresh_seconds: int = DEFAULT_MODEL_REFRESH_SECONDS
    canary_model_version: str | None = None
    canary_percent: float = DEFAULT_CANARY_PERCENT
    # The one bucket whose uploads are processed; None (unset) accepts any bucket but
    # OUTPUT_BUCKET, as before this setting existed (Terraform always sets it).
    input_bucket: str | None = None
    delete_outputs_on_delete: bool = DEFAULT_DELETE_OUTPUTS_ON_DELETE
    concurrency: int = DEFAULT_CONCURRENCY
    # The instance's memory (Terraform sets it from the function's memory); None: unknown, not
    # checked (the local stack).
    memory_mib: int | None = None
    request_timeout_seconds: int = DEFAULT_REQUEST_TIMEOUT_SECONDS

    @property
    def canary_enabled(self) -> bool:
        """True when a share of uploads goes to CANARY_MODEL_VERSION."""
        return self.canary_model_version is not None and self.canary_percent > 0


# Each field is read from the environment variable of its upper-cased name. Terraform passes every
# one of them (tools/iac/check_structure.py checks it) except these, left at their defaults.
DEPLOY_DEFAULTED = ("MODEL_CACHE_DIR",)


def variable_names() -> tuple[str, ...]:
    """The environment variable of each setting, in field order."""
    return tuple(field.name.upper() for field in fields(Settings))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Reads and validates the settings from `environ` (default: `os.environ`)."""
    env = os.environ if environ is None else environ
    settings = Settings(
        output_bucket=_required(env, "OUTPUT_BUCKET", _bucket_name),
        model_uri=_required(env, "MODEL_URI", _model_uri),
        max_image_bytes=_optional(env, "MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES, _positive_int),
        max_image_pixels=_optional(
            env, "MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS, _positive_int
        ),
        num_threads=_optional(env, "NUM_THREADS", DEFAULT_NUM_THREADS, _thread_count),
        log_level=_optional(env, "LOG_LEVEL", DEFAULT_LOG_LEVEL, _log_level),
        model_cache_dir=_optional(env, "MODEL_CACHE_DIR", DEFAULT_MODEL_CACHE_DIR, _directory),
        model_refresh_seconds=_optional(
            env, "MODEL_REFRESH_SECONDS", DEFAULT_MODEL_REFRESH_SECONDS, _non_negative_int
        ),
        canary_model_version=_optional(env, "CANARY_MODEL_VERSION", None, _version_name),
        canary_percent=_optional(env, "CANARY_PERCENT", DEFAULT_CANARY_PERCENT, _percent),
        input_bucket=_optional(env, "INPUT_BUCKET", None, _bucket_name),
        delete_outputs_on_delete=_optional(
            env, "DELETE_OUTPUTS_ON_DELETE", DEFAULT_DELETE_OUTPUTS_ON_DELETE, _boolean
        ),
        concurrency=_optional(env, "CONCURRENCY", DEFAULT_CONCURRENCY, _concurrency),
        memory_mib=_optional(env, "MEMORY_MIB", None, _positive_int),
        request_timeout_seconds=_optional(
            env, "REQUEST_TIMEOUT_SECONDS", DEFAULT_REQUEST_TIMEOUT_SECONDS, _positive_int
        ),
    )
    _check_memory_budget(settings)
    if settings.input_bucket is not None and settings.input_bucket == settings.output_bucket:
        raise SettingsError(
            "INPUT_BUCKET",
            f"must not be OUTPUT_BUCKET (got {settings.input_bucket!r}): outputs would trigger "
            "the function",
        )
    if settings.canary_percent > 0 and settings.canary_model_version is None:
        raise SettingsError(
            "CANARY_MODEL_VERSION",
            f"is required when CANARY_PERCENT is above 0 (got CANARY_PERCENT "
            f"{settings.canary_percent:g})",
        )
    if settings.canary_model_version is not None and not settings.model_uri.rpartition("/")[0]:
        raise SettingsError(
            "CANARY_MODEL_VERSION",
            f"needs a MODEL_URI inside a model family (<family>/latest or <family>/<version>), "
            f"to find <family>/{settings.canary_model_version} beside it "
            f"(got MODEL_URI {settings.model_uri!r})",
        )
    return settings


def _check_memory_budget(settings: Settings) -> None:
    """Refuses a configuration whose worst case does not fit the instance's memory: two hostile
    40 MP uploads on an instance sized for one would kill it and dead-letter innocent requests."""
    if settings.memory_mib is None:
        return
    budget = memory.load_budget()
    needed = budget.required_mib(
        concurrency=settings.concurrency,
        max_image_pixels=settings.max_image_pixels,
        max_image_bytes=settings.max_image_bytes,
    )
    if needed > settings.memory_mib:
        per_request = budget.request_mib(
            max_image_pixels=settings.max_image_pixels, max_image_bytes=settings.max_image_bytes
        )
        raise SettingsError(
            "MEMORY_MIB",
            f"{settings.memory_mib} MiB is too small for CONCURRENCY {settings.concurrency} x "
            f"{per_request} MiB per request (MAX_IMAGE_PIXELS {settings.max_image_pixels}, "
            f"MAX_IMAGE_BYTES {settings.max_image_bytes}) + {budget.baseline_mib} MiB baseline "
            f"= {needed} MiB: raise the memory, or lower CONCURRENCY or MAX_IMAGE_PIXELS "
            "(docs/performance.md, 'Memory budget')",
        )


def is_valid_bucket_name(name: str) -> bool:
    """True for a syntactically valid Cloud Storage bucket name."""
    if not _BUCKET_RE.match(name) or ".." in name or name.startswith("goog"):
        return False
    return all(0 < len(part) <= 63 for part in name.split("."))


def _required[T](env: Mapping[str, str], name: str, parse: Callable[[str], T]) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        raise SettingsError(name, "is required but not set")
    return _parse(name, raw, parse)


def _optional[T](env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    return _parse(name, raw, parse)


def _parse[T](name: str, raw: str, parse: Callable[[str], T]) -> T:
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingsError(name, f"{exc} (got {raw!r})") from None


def _bucket_name(raw: str) -> str:
    if raw.startswith("gs://"):
        raise ValueError("expected a bucket name, not a gs:// URI")
    if not is_valid_bucket_name(raw):
        raise ValueError("is not a valid Cloud Storage bucket name")
    return raw


def _model_uri(raw: str) -> str:
    if raw.startswith("gs://"):
        bucket, _, path = raw[len("gs://") :].partition("/")
        if not is_valid_bucket_name(bucket):
            raise ValueError("names an invalid bucket")
        if not path.strip("/"):
            raise ValueError("must name a model directory inside the bucket (gs://BUCKET/PATH)")
        return raw.rstrip("/")
    if "://" in raw:
        raise ValueError("must be a gs://BUCKET/PATH URI or a local directory")
    return raw.rstrip("/") or "/"


def _positive_int(raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValueError("must be a whole number of seconds (0: never)") from None
    if value < 0:
        raise ValueError("must be 0 (never) or more")
    return value


def _version_name(raw: str) -> str:
    if raw == LATEST_SEGMENT or not SAFE_COMPONENT.match(raw):
        raise ValueError(
            "must be a published version's name (a directory beside latest.json, e.g. "
            "20261121-131500-ab12cd34), not a path or 'latest'"
        )
    return raw


def _percent(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number from 0 to 100") from None
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise ValueError("must be a number from 0 to 100")
    return value


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"must be true or false ({'/'.join(_TRUE)} or {'/'.join(_FALSE)})")


def _thread_count(raw: str) -> int:
    value = _positive_int(raw)
    if value > MAX_NUM_THREADS:
        raise ValueError(f"must be at most {MAX_NUM_THREADS}")
    return value


def _concurrency(raw: str) -> int:
    value = _positive_int(raw)
    if value > MAX_CONCURRENCY:
        raise ValueError(f"must be at most {MAX_CONCURRENCY} (Cloud Run's limit)")
    return value


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


def _directory(raw: str) -> str:
    if "\x00" in raw:
        raise ValueError("must be a directory path")
    return raw
