"""Which cells are held out of SAE training (for variance explained, dead features and the principal axes).
Torch-free: the plan and the statistics import it."""

from __future__ import annotations

import numpy as np

HELDOUT_STREAM = 0x484F  # separates the held-out draw of a cell from its other random draws


def heldout_flags(cells: np.ndarray, holdout: float, seed: int) -> np.ndarray:
    """Held-out cells: each cell independently with probability `holdout`, from a generator seeded by (seed, cell),
    so the choice does not depend on the shard size, the order or the number of cells."""
    return np.array([np.random.default_rng([seed, HELDOUT_STREAM, int(c)]).random() < holdout for c in cells],
                    dtype=bool)
