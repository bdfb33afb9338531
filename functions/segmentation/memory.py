"""The memory budget: how much memory an instance needs for its concurrency and image limits.

One request at its worst holds the decoded image (`bytes_per_pixel` x MAX_IMAGE_PIXELS, the
worst accepted format measured by bench/request_memory.py, with a margin), the upload's bytes
(`upload_copies` x MAX_IMAGE_BYTES: the download buffer and its joined copy) and a fixed
overhead (interpreter arena, mask). An instance holds one baseline (Python, the libraries, the
models and their /tmp copies; Cloud Run's /tmp is memory) plus CONCURRENCY such requests.
The figures live in memory_budget.json, which Terraform's infra/memory_budget reads too, so the
cold-start refusal here and the plan-time refusal there apply the same rule.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

BUDGET_FILE = Path(__file__).with_name("memory_budget.json")
MIB = 1024 * 1024


@dataclass(frozen=True)
class MemoryBudget:
    bytes_per_pixel: float
    upload_copies: int
    request_overhead_mib: int
    baseline_mib: int

    def request_mib(self, *, max_image_pixels: int, max_image_bytes: int) -> int:
        """The most one request can hold, in MiB (rounded up)."""
        image = self.bytes_per_pixel * max_image_pixels + self.upload_copies * max_image_bytes
        return math.ceil(image / MIB) + self.request_overhead_mib

    def required_mib(self, *, concurrency: int, max_image_pixels: int, max_image_bytes: int) -> int:
        """Baseline plus `concurrency` worst-case requests, in MiB."""
        per_request = self.request_mib(
            max_image_pixels=max_image_pixels, max_image_bytes=max_image_bytes
        )
        return self.baseline_mib + concurrency * per_request


def load_budget(path: Path = BUDGET_FILE) -> MemoryBudget:
    document = json.loads(path.read_text())
    return MemoryBudget(
        bytes_per_pixel=float(document["bytes_per_pixel"]),
        upload_copies=int(document["upload_copies"]),
        request_overhead_mib=int(document["request_overhead_mib"]),
        baseline_mib=int(document["baseline_mib"]),
    )
