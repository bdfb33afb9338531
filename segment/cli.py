"""`segment`: the local stack and uploads from the command line.

    segment --version
    segment local run FILE... --out DIR [--model-uri URI] [--timeout S]
    segment local up [--model-uri URI] [--log-dir DIR]
    segment upload FILE... [--bucket B] [--wait --out DIR] [--output-bucket OB] [--timeout S]
                           [--notify-topic projects/P/topics/T]
    segment backfill gs://BUCKET/PREFIX --output-bucket OB --notify-topic projects/P/topics/T
                     [--rate N/s] [--state FILE] [--dry-run]
    segment dlq list --subscription projects/P/subscriptions/S [--limit N] [--json]
    segment dlq replay --subscription projects/P/subscriptions/S --topic projects/P/topics/T
                       [--limit N] [--dry-run]
    segment status gs://BUCKET/NAME --output-bucket OB [--json]
    segment models list [--registry R] [--json]
    segment models promote VERSION [--registry R]
    segment models rollback [--registry R]
    segment models compare [--output-bucket OB] [--prefix P] [--since TIME] [--json]

Argument parsing only; the work is in segment.commands. Options that default to an environment
variable are declared in ENV_DEFAULTS, here only: the parser reads the variable (and --help shows
it), the handlers read only `args`. Errors are one line on stderr: usage errors exit 2, cloud and
network failures 1 (an unreachable endpoint is named, with the variable that chose it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from segment import clients, commands, models
from segment.stack import DEFAULT_MODEL_URI

DISTRIBUTION = "serverless-segmentation"

# Options whose default is an environment variable (`segment local up` prints them all).
ENV_DEFAULTS = {
    "--bucket": "SEGMENT_INPUT_BUCKET",
    "--output-bucket": "SEGMENT_OUTPUT_BUCKET",
    "--notify-topic": "SEGMENT_NOTIFY_TOPIC",
    "--topic": "SEGMENT_NOTIFY_TOPIC",
    "--subscription": "SEGMENT_DEAD_LETTER_SUBSCRIPTION",
    "--registry": "SEGMENT_MODEL_REGISTRY",
}


def version() -> str:
    """The installed distribution's version ("unknown" when it is not installed)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser; option defaults from `environ` (default: the process environment)."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="segment", description="Serverless Segmentation: local stack, uploads and operations."
    )
    parser.add_argument("--version", action="version", version=f"segment {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="the local stack (Pub/Sub + GCS emulators + function)")
    local_sub = local.add_subparsers(dest="local_command", required=True)

    run = local_sub.add_parser(
        "run", help="start the stack, segment FILEs, write masks + contact sheet, stop"
    )
    run.add_argument("files", nargs="+", type=Path, metavar="FILE")
    run.add_argument("--out", type=Path, required=True, help="output directory")
    _model_uri(run)
    run.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for all outputs (180)"
    )
    run.set_defaults(handler=commands.local_run)

    up = local_sub.add_parser("up", help="start the stack and keep it running until Ctrl-C")
    _model_uri(up)
    up.add_argument("--log-dir", type=Path, default=Path("out/local/logs"), help="(out/local/logs)")
    up.set_defaults(handler=commands.local_up)

    upload = sub.add_parser(
        "upload",
        help="upload FILEs to a bucket (GCS or the emulator); on emulators also notify",
    )
    upload.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _env_option(upload, env, "--bucket", "input bucket")
    upload.add_argument("--prefix", default="", help="object name prefix, e.g. uploads/")
    _env_option(
        upload,
        env,
        "--notify-topic",
        "publish the GCS notification here (projects/P/topics/T); needed on emulators, where "
        "no bucket notification exists",
    )
    upload.add_argument("--wait", action="store_true", help="wait for each mask / error record")
    upload.add_argument("--out", type=Path, help="with --wait: download outputs here")
    _env_option(upload, env, "--output-bucket", "with --wait: the function's output bucket")
    upload.add_argument("--timeout", type=float, default=300.0, help="seconds for --wait (300)")
    upload.set_defaults(handler=commands.upload)
    _operations(sub, env)
    return parser


def _env_option(
    parser: argparse.ArgumentParser, env: Mapping[str, str], option: str, help_text: str
) -> None:
    """`option`, defaulting to its ENV_DEFAULTS variable (shown in --help with its value)."""
    variable = ENV_DEFAULTS[option]
    value = env.get(variable) or None
    now = f"now {value}" if value else "unset"
    parser.add_argument(
        option,
        default=value,
        help=f"{help_text} (default ${variable}, {now})".replace("%", "%%"),
    )


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout (machine-readable) instead of text",
    )


def _operations(sub: argparse._SubParsersAction, env: Mapping[str, str]) -> None:
    """backfill, dlq list/replay, status (docs/operations.md)."""
    backfill = sub.add_parser(
        "backfill",
        help="publish the upload notification for existing objects that have no current output",
    )
    backfill.add_argument("source", metavar="gs://BUCKET/PREFIX")
    _env_option(backfill, env, "--output-bucket", "the function's output bucket")
    _env_option(backfill, env, "--notify-topic", "the uploads topic, projects/P/topics/T")
    backfill.add_argument("--rate", default="10/s", help="most notifications per second (10/s)")
    backfill.add_argument(
        "--state",
        type=Path,
        help="resume file: records the last published object; a re-run continues after it",
    )
    backfill.add_argument("--dry-run", action="store_true", help="list what would be published")
    backfill.set_defaults(handler=commands.backfill)

    dlq = sub.add_parser("dlq", help="the dead-letter subscription: list, replay")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    subscription_help = "the dead-letter pull subscription, projects/P/subscriptions/S"
    dlq_list = dlq_sub.add_parser("list", help="show dead-lettered messages without consuming them")
    _env_option(dlq_list, env, "--subscription", subscription_help)
    dlq_list.add_argument("--limit", type=_positive_int, default=100, help="(100)")
    _json_option(dlq_list)
    dlq_list.set_defaults(handler=commands.dlq_list)
    replay = dlq_sub.add_parser(
        "replay", help="re-publish dead-lettered messages to the uploads topic, then ack them"
    )
    _env_option(replay, env, "--subscription", subscription_help)
    _env_option(replay, env, "--topic", "the uploads topic, projects/P/topics/T")
    replay.add_argument("--limit", type=_positive_int, default=100, help="(100)")
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    replay.set_defaults(handler=commands.dlq_replay)

    status = sub.add_parser("status", help="the mask or error record of one input object")
    status.add_argument("object", metavar="gs://BUCKET/NAME")
    _env_option(status, env, "--output-bucket", "the function's output bucket")
    _json_option(status)
    status.set_defaults(handler=commands.status)
    _models(sub, env)


def _models(sub: argparse._SubParsersAction, env: Mapping[str, str]) -> None:
    """models list/promote/rollback/compare (docs/operations.md, "Rolling out a model")."""
    models_parser = sub.add_parser(
        "models",
        help="the model registry (list, promote, rollback) and stable-vs-canary mask quality",
    )
    models_sub = models_parser.add_subparsers(dest="models_command", required=True)
    registry_help = (
        "the model registry, gs://BUCKET[/PREFIX] or a local directory, holding "
        "unet/<version>/ and unet/latest.json (model_build publish's base)"
    )
    listing = models_sub.add_parser(
        "list", help="versions with their manifest metrics, which is latest, and their pictures"
    )
    _env_option(listing, env, "--registry", registry_help)
    _json_option(listing)
    listing.set_defaults(handler=commands.models_list)
    promote = models_sub.add_parser(
        "promote",
        help="point latest at VERSION, after verifying it (refused if latest moved meanwhile)",
    )
    promote.add_argument("version", metavar="VERSION")
    _env_option(promote, env, "--registry", registry_help)
    promote.set_defaults(handler=commands.models_promote)
    rollback = models_sub.add_parser(
        "rollback", help="point latest back at the version it named before (its history)"
    )
    _env_option(rollback, env, "--registry", registry_help)
    rollback.set_defaults(handler=commands.models_rollback)
    compare = models_sub.add_parser(
        "compare",
        help="quality signals of stable vs canary masks, from the masks' metadata",
    )
    _env_option(compare, env, "--output-bucket", "the function's output bucket")
    compare.add_argument(
        "--prefix", default="", help="only masks of input names under this prefix (e.g. uploads/)"
    )
    compare.add_argument(
        "--since",
        type=_timestamp,
        help="only masks written at or after this time (ISO 8601; UTC unless it says otherwise)",
    )
    _json_option(compare)
    compare.set_defaults(handler=commands.models_compare)


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _model_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-uri",
        default=DEFAULT_MODEL_URI,
        help="model directory (model.tflite + manifest.json), local or gs:// "
        "(default: models/default in the repository)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except commands.MissingOptionError as exc:
        parser.error(_missing(exc))
    except commands.UsageError as exc:
        parser.error(str(exc))
    except models.RegistryError as exc:  # a lost race, an unverifiable version: one line
        print(f"segment: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("segment: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # cloud, network and server-start errors: one line, not a traceback
        line = _one_line(exc, getattr(args, "endpoints", None) or clients.Endpoints.from_env())
        if line is None:
            raise
        print(f"segment: {line}", file=sys.stderr)
    return 1


def _missing(exc: commands.MissingOptionError) -> str:
    variable = ENV_DEFAULTS.get(exc.option)
    notes = [f"or set {variable}"] if variable else []
    notes += [exc.hint] if exc.hint else []
    when = f" {exc.when}" if exc.when else ""
    return f"{exc.option} is required{when}" + (f" ({'; '.join(notes)})" if notes else "")


def _one_line(exc: Exception, endpoints: clients.Endpoints) -> str | None:
    """What to print for an expected failure (None: a bug, let its traceback show)."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    from segment.emulators import ServerStartError

    network = clients.network_failure(exc, endpoints)
    if network is not None:
        return network
    if isinstance(exc, auth_exceptions.DefaultCredentialsError):
        return (
            "no Google credentials (run `gcloud auth application-default login`, or set "
            f"{clients.STORAGE_EMULATOR_ENV} and {clients.PUBSUB_EMULATOR_ENV} for emulators)"
        )
    expected = api_exceptions.GoogleAPICallError | api_exceptions.RetryError | ServerStartError
    if isinstance(exc, expected):
        return f"{type(exc).__name__}: {exc}"
    return None


if __name__ == "__main__":
    sys.exit(main())
