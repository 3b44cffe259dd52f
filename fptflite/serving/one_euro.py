"""One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) for keypoint coordinates.

An adaptive low-pass filter: the cutoff rises with the signal's speed, so a still keypoint is
smoothed strongly (little jitter) and a moving one lightly (little lag). One filter holds any
array shape (e.g. [K, 2] keypoints) and filters each element independently.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_MIN_CUTOFF = 1.0   # Hz: smoothing of a still keypoint (lower = smoother)
DEFAULT_BETA = 0.05        # cutoff increase per unit speed (pixels/s): higher = less lag
DEFAULT_D_CUTOFF = 1.0     # Hz: smoothing of the speed estimate


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters a stream of arrays sampled at times t (seconds).

    Args:
        min_cutoff: minimum cutoff frequency (Hz).
        beta: speed coefficient.
        d_cutoff: cutoff of the derivative filter (Hz).
    """

    def __init__(self, min_cutoff: float = DEFAULT_MIN_CUTOFF, beta: float = DEFAULT_BETA,
                 d_cutoff: float = DEFAULT_D_CUTOFF):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"need min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff},"
                             f" {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Returns the filtered value of ``x`` (any shape) observed at time ``t``."""
        x = np.asarray(x, np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:
            raise ValueError(f"time must increase: {t} after {self._t}")
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        a = _alpha(self.min_cutoff + self.beta * np.abs(self._dx), dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()
