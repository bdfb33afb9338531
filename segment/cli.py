"""`segment`: the local stack and uploads from the command line.

    segment local run FILE... --out DIR [--model-uri URI] [--timeout S]
    segment local up [--model-uri URI] [--log-dir DIR]
    segment upload FILE... [--bucket B] [--wait --out DIR] [--output-bucket OB] [--timeout S]
                           [--notify-topic projects/P/topics/T]
    segment backfill gs://BUCKET/PREFIX --output-bucket OB --notify-topic projects/P/topics/T
                     [--rate N/s] [--state FILE] [--dry-run]
    segment dlq list --subscription projects/P/subscriptions/S [--limit N]
    segment dlq replay --subscription projects/P/subscriptions/S --topic projects/P/topics/T
                       [--limit N] [--dry-run]
    segment status gs://BUCKET/NAME --output-bucket OB

Argument parsing only; the work is in segment.commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from segment import commands
from segment.stack import DEFAULT_MODEL_URI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segment", description="Serverless Segmentation: local stack, uploads and operations."
    )
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
    upload.add_argument("--bucket", help="input bucket (default $SEGMENT_INPUT_BUCKET)")
    upload.add_argument("--prefix", default="", help="object name prefix, e.g. uploads/")
    upload.add_argument(
        "--notify-topic",
        help="publish the GCS notification here (projects/P/topics/T; default "
        "$SEGMENT_NOTIFY_TOPIC); needed on emulators, where no bucket notification exists",
    )
    upload.add_argument("--wait", action="store_true", help="wait for each mask / error record")
    upload.add_argument("--out", type=Path, help="with --wait: download outputs here")
    upload.add_argument("--output-bucket", help="default $SEGMENT_OUTPUT_BUCKET")
    upload.add_argument("--timeout", type=float, default=300.0, help="seconds for --wait (300)")
    upload.set_defaults(handler=commands.upload)
    _operations(sub)
    return parser


def _operations(sub: argparse._SubParsersAction) -> None:
    """backfill, dlq list/replay, status (docs/operations.md)."""
    backfill = sub.add_parser(
        "backfill",
        help="publish the upload notification for existing objects that have no current output",
    )
    backfill.add_argument("source", metavar="gs://BUCKET/PREFIX")
    backfill.add_argument("--output-bucket", help="default $SEGMENT_OUTPUT_BUCKET")
    backfill.add_argument(
        "--notify-topic",
        help="the uploads topic, projects/P/topics/T (default $SEGMENT_NOTIFY_TOPIC)",
    )
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
    subscription_help = (
        "the dead-letter pull subscription, projects/P/subscriptions/S "
        "(default $SEGMENT_DEAD_LETTER_SUBSCRIPTION)"
    )
    dlq_list = dlq_sub.add_parser("list", help="show dead-lettered messages without consuming them")
    dlq_list.add_argument("--subscription", help=subscription_help)
    dlq_list.add_argument("--limit", type=_positive_int, default=100, help="(100)")
    dlq_list.set_defaults(handler=commands.dlq_list)
    replay = dlq_sub.add_parser(
        "replay", help="re-publish dead-lettered messages to the uploads topic, then ack them"
    )
    replay.add_argument("--subscription", help=subscription_help)
    replay.add_argument(
        "--topic", help="the uploads topic, projects/P/topics/T (default $SEGMENT_NOTIFY_TOPIC)"
    )
    replay.add_argument("--limit", type=_positive_int, default=100, help="(100)")
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    replay.set_defaults(handler=commands.dlq_replay)

    status = sub.add_parser("status", help="the mask or error record of one input object")
    status.add_argument("object", metavar="gs://BUCKET/NAME")
    status.add_argument("--output-bucket", help="default $SEGMENT_OUTPUT_BUCKET")
    status.set_defaults(handler=commands.status)


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
    except commands.UsageError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        print("segment: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # cloud API and server-start errors: one line, not a traceback
        from google.api_core import exceptions as api_exceptions

        from segment.emulators import ServerStartError

        if not isinstance(exc, api_exceptions.GoogleAPICallError | ServerStartError):
            raise
        print(f"segment: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
