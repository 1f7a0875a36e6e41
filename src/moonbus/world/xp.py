"""The classic RuneScape experience table: levels 1 to 99, XP capped at 200 million.

Pure functions over an immutable table built once at import; any thread may
call them.
"""

from __future__ import annotations

import bisect
import math
from typing import Final

__all__ = ["MAX_LEVEL", "MAX_XP", "level_for_xp", "xp_for_level"]

MAX_LEVEL: Final = 99
MAX_XP: Final = 200_000_000


def _build_table() -> tuple[int, ...]:
    # XP needed for level L is floor(sum_{l=1}^{L-1} floor(l + 300 * 2^(l/7)) / 4).
    thresholds = [0]  # level 1
    points = 0
    for level in range(1, MAX_LEVEL):
        points += math.floor(level + 300 * 2 ** (level / 7))
        thresholds.append(points // 4)
    return tuple(thresholds)


# _THRESHOLDS[i] is the XP needed for level i + 1.
_THRESHOLDS: Final = _build_table()


def xp_for_level(level: int) -> int:
    """XP needed to reach ``level`` (1..99): 0 for level 1, 83 for 2, 13,034,431 for 99."""
    if not 1 <= level <= MAX_LEVEL:
        raise ValueError(f"level must be between 1 and {MAX_LEVEL}, got {level}")
    return _THRESHOLDS[level - 1]


def level_for_xp(xp: int) -> int:
    """The level that ``xp`` experience gives (1..99)."""
    if xp < 0:
        raise ValueError(f"xp cannot be negative, got {xp}")
    return bisect.bisect_right(_THRESHOLDS, xp)
