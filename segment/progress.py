"""Progress bars for long work (backfill, dlq replay, upload --wait): a tqdm bar on stderr, only
when stderr is a terminal, so pipes, logs and tests get exactly the plain lines they always got.

    with Progress("backfill", unit="object") as progress:
        progress.say("  published ...")   # a stdout line; the bar is redrawn under it
        progress.update()
"""

from __future__ import annotations

import sys
from typing import IO, Any


class Progress:
    """A bar on `stream` (default: stderr) when it is a terminal; otherwise only `say` prints."""

    def __init__(
        self,
        desc: str,
        *,
        total: int | None = None,
        unit: str = "it",
        stream: IO[str] | None = None,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self._bar: Any = None
        if _is_terminal(self.stream):
            try:
                from tqdm import tqdm
            except ImportError:  # progress bars are a nicety, never a requirement
                return
            self._bar = tqdm(
                total=total, desc=desc, unit=unit, file=self.stream, leave=False, dynamic_ncols=True
            )

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def update(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def say(self, message: str) -> None:
        """Prints a line on stdout (above the bar, when one is shown)."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
