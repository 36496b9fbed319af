"""Loss-weight ramps as functions of the training progress t/T."""

from __future__ import annotations

import math


def sigmoid_rampup(progress: float, rampup_fraction: float) -> float:
    """r(t) = exp(−5·(1 − min(t, t_r)/t_r)²) with t_r = rampup_fraction·T (Laine & Aila 2017).

    Mean Teacher's ramp-up of the consistency weight (docs/methods/mean_teacher.md).

    `progress` = t/T. A `rampup_fraction` of 0 means no ramp-up: r = 1 throughout.
    """
    if rampup_fraction <= 0:
        return 1.0
    phase = 1.0 - min(progress, rampup_fraction) / rampup_fraction
    return math.exp(-5.0 * phase * phase)
