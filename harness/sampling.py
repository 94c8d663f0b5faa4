"""Which requests get mirrored: a seeded draw per request, so a run can be replayed."""

from __future__ import annotations

import numpy as np

_BLOCK = 4096  # draws taken from the generator at a time; one numpy call per block is cheap


class Sampler:
    """`take()` is True for about `fraction` of calls, in a sequence fixed by `seed`."""

    def __init__(self, fraction: float, seed: int):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"sample fraction must be within [0, 1], got {fraction}")
        self.fraction = fraction
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._draws: list[bool] = []

    def take(self) -> bool:
        if self.fraction >= 1.0:
            return True
        if self.fraction <= 0.0:
            return False
        if not self._draws:
            # Reversed so that pop() yields the draws in generation order.
            self._draws = (self._rng.random(_BLOCK) < self.fraction)[::-1].tolist()
        return self._draws.pop()
