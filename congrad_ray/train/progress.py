"""The training run's progress record: rank 0 writes ``_state/progress.json`` (optimizer step, total steps, the
last logged loss) into the run directory as it trains; the driver's probe (:mod:`congrad_ray.progress`) reads it.
The file is written atomically and at most every ``every_s`` seconds, and always when the Trainer logs."""

from __future__ import annotations

import time
from typing import Any

from ..progress import Count
from ..storage import Location

RECORD = ("_state", "progress.json")


def progress_callback(run_uri: str, every_s: float = 2.0) -> Any:
    """A ``TrainerCallback`` for rank 0 that keeps ``RUN/_state/progress.json`` current."""
    from transformers import TrainerCallback

    target = Location.of(run_uri).join(*RECORD)

    class StepRecord(TrainerCallback):
        def __init__(self) -> None:
            self.loss: float | None = None
            self.written = 0.0

        def _write(self, state: Any) -> None:
            target.write_json({"step": state.global_step, "max_steps": state.max_steps, "loss": self.loss})
            self.written = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
            self._write(state)

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() - self.written >= every_s or state.global_step >= state.max_steps:
                self._write(state)

    return StepRecord()


class StepsDone:
    """Probe: optimizer steps done of ``max_steps``, with the last logged loss."""

    def __init__(self, run_uri: str, max_steps: int):
        self.record, self.max_steps = Location.of(run_uri).join(*RECORD), max_steps

    def __call__(self) -> Count:
        if not self.record.exists():
            return Count(0, self.max_steps, "steps")
        r = self.record.read_json()
        loss = f"loss {r['loss']:.3f}" if r.get("loss") is not None else ""
        return Count(int(r["step"]), int(r.get("max_steps") or self.max_steps), "steps", loss)
