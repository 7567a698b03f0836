"""A training loss that climbs back to where it started has diverged: say so while training runs.

me5-small on ChnSentiCorp at learning rate 1e-4 (bf16) fell from 0.69 to 0.30 in 130 steps, then went
back to 0.69 at step ~350 and stayed there: the model predicted one class for the rest of the run, and
nothing said so until the dev score after the epoch. `LossWatch` sees the logged window losses and
warns once, naming what to change.
"""

from __future__ import annotations

import math

FELL = 0.6  # the loss counts as having fallen once a window is at most this share of the first window's
BACK = 0.95  # ... and as back where it started at this share or more
WINDOWS = 3  # consecutive logged windows back there before the warning


class LossWatch:
    def __init__(self, learning_rate: float | None = None):
        self.learning_rate = learning_rate
        self.first: tuple[int, float] | None = None
        self.best: tuple[int, float] | None = None
        self.streak = 0
        self.warned = False

    def observe(self, step: int, loss: float) -> str | None:
        """The warning for this logged window loss, once per run; else None."""
        if self.warned:
            return None
        if not math.isfinite(loss):
            self.warned = True
            return (f"warning: the training loss is {loss} at step {step}: training has diverged; {self._advice()}")
        if self.first is None:
            self.first = self.best = (step, loss)
            return None
        if loss < self.best[1]:
            self.best = (step, loss)
        start = self.first[1]
        if self.best[1] > FELL * start or loss < BACK * start:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < WINDOWS:
            return None
        self.warned = True
        return (f"warning: the training loss is back at its starting level ({loss:.3f} at step {step}; it was {start:.3f} at "
                f"step {self.first[0]} and {self.best[1]:.3f} at step {self.best[0]}): training has diverged and the model may "
                f"have stopped learning; {self._advice()}")

    def _advice(self) -> str:
        rate = f" (now {self.learning_rate:g})" if self.learning_rate else ""
        return f"lower training.learning_rate{rate}, e.g. to half, and train again"
