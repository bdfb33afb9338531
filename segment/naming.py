"""Output naming, shared with the function: one definition, in functions/segmentation/storage.py.

`segment` runs from the repository (an editable install), so it imports the function's own
`mask_name` / `error_name` instead of copying them (copies drift).
"""

from __future__ import annotations

import sys
from pathlib import Path

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"
SOURCE_GENERATION = "source-generation"


def _storage_module():
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.append(str(FUNCTIONS_DIR))
    from segmentation import storage

    return storage


def mask_name(source_name: str) -> str:
    """`masks/<source_name>.png` (or the function's safe fallback)."""
    return _storage_module().mask_name(source_name)


def error_name(source_name: str) -> str:
    """`errors/<source_name>.json` (or the function's safe fallback)."""
    return _storage_module().error_name(source_name)
