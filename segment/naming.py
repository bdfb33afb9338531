"""Output naming, shared with the function: one definition, in functions/segmentation/storage.py.

`segmentation` is installed with this project (pyproject's package-dir), so `segment` imports
the function's own `mask_name` / `error_name` instead of copying them (copies drift).
"""

from __future__ import annotations

from segmentation.storage import error_name, mask_name

SOURCE_GENERATION = "source-generation"

__all__ = ["SOURCE_GENERATION", "error_name", "mask_name"]
