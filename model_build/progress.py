"""Progress for long steps: bars only where a person watches (stderr is a terminal), so the
training VM's logs, CI and pipes get the plain structured lines they always got."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def interactive() -> bool:
    return sys.stderr.isatty()


def bar[T](items: Iterable[T], desc: str, unit: str, total: int | None = None) -> Iterable[T]:
    """`items`, with a tqdm bar on stderr when it is a terminal."""
    return tqdm(items, desc=desc, unit=unit, total=total, leave=False, disable=not interactive())


def keras_verbosity() -> int:
    """Keras fit's `verbose`: 1 (a bar per epoch) on a terminal, 2 (one line per epoch) else."""
    return 1 if interactive() else 2
