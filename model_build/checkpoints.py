"""Per-epoch checkpoints in a local or gs:// directory, and resuming from the latest one.

    <dir>/state.json            {"epoch": completed epochs, "phase", "checkpoint", "complete",
                                 "early_stopping": {"phase", "wait", "best", "best_epoch"}, ...}
    <dir>/ckpt-<epoch>.keras    full model + optimizer state (Keras format)

state.json is written after its checkpoint, so it never names a missing file: a spot VM that is
preempted mid-upload resumes from the previous complete epoch.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras

from model_build.layout import STATE_FILE
from model_build.storage import Location, open_location

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2


@dataclass
class TrainingState:
    epoch: int = 0  # epochs completed, over both phases
    phase: str = "head"
    checkpoint: str | None = None
    complete: bool = False
    phase_done: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    early_stopping: dict[str, Any] = field(default_factory=dict)  # ResumableEarlyStopping


class CheckpointStore:
    def __init__(self, uri: str) -> None:
        self.location: Location = open_location(uri)

    def load_state(self) -> TrainingState | None:
        try:
            raw = json.loads(self.location.read_bytes(STATE_FILE))
        except FileNotFoundError:
            return None
        return TrainingState(**raw)

    def save_state(self, state: TrainingState) -> None:
        self.location.write_bytes(STATE_FILE, json.dumps(asdict(state), indent=2).encode())

    def save_model(self, model: keras.Model, name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
            path = Path(tmp) / name
            model.save(path)
            self.location.write_bytes(name, path.read_bytes())

    def load_model(self, name: str) -> keras.Model:
        with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(self.location.read_bytes(name))
            return keras.models.load_model(path)

    def prune(self, keep: str) -> None:
        """Deletes all but the newest KEEP_CHECKPOINTS checkpoints (never `keep`)."""
        checkpoints = sorted(n for n in self.location.list("ckpt-") if n.endswith(".keras"))
        for name in checkpoints[:-KEEP_CHECKPOINTS]:
            if name != keep:
                self.location.delete(name)


class CheckpointCallback(keras.callbacks.Callback):
    """Saves the model and the training state at the end of every epoch."""

    def __init__(self, store: CheckpointStore, state: TrainingState, phase: str) -> None:
        super().__init__()
        self.store = store
        self.state = state
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        name = f"ckpt-{epoch + 1:04d}.keras"
        self.store.save_model(self.model, name)
        metrics = {k: round(float(v), 5) for k, v in (logs or {}).items()}
        self.state.epoch = epoch + 1
        self.state.phase = self.phase
        self.state.checkpoint = name
        self.state.history.append({"epoch": epoch + 1, "phase": self.phase, **metrics})
        self.store.save_state(self.state)
        self.store.prune(keep=name)
        log.info(
            "epoch done",
            extra={"epoch": epoch + 1, "phase": self.phase, "checkpoint": name, **metrics},
        )


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience counter and best value survive a preemption.

    Keras resets `wait` and `best` at the start of every fit(), so a run preempted every few
    epochs would never stop early. This callback records them in the training state at the end
    of each epoch (it must run before CheckpointCallback, which saves the state) and restores
    them when a resumed fit() starts in the same phase. A new phase starts afresh.
    """

    def __init__(self, state: TrainingState, phase: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state
        self.phase = phase

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        super().on_train_begin(logs)
        saved = self.state.early_stopping
        if saved.get("phase") == self.phase and saved.get("monitor") == self.monitor:
            self.wait = int(saved["wait"])
            self.best = saved["best"]
            self.best_epoch = int(saved["best_epoch"])
            log.info("restored early stopping", extra=dict(saved))

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        self.state.early_stopping = {
            "phase": self.phase,
            "monitor": self.monitor,
            "wait": self.wait,
            "best": None if self.best is None else float(self.best),
            "best_epoch": self.best_epoch,
        }
