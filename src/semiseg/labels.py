"""The label-space constants every layer shares (data, components, metrics, pictures).

Masks use class ids 0 … C−1; `IGNORE_INDEX` marks pixels that count in no loss and no metric:
void/ignored annotations and the padding added around crops smaller than the crop size
(docs/datasets.md).
"""

IGNORE_INDEX = 255


def target_region(target, valid=None):
    """Ω as a bool mask: pixels whose label is not IGNORE_INDEX and, when `valid` is given, that are valid."""
    mask = target != IGNORE_INDEX
    if valid is not None:
        mask = mask & valid.bool()
    return mask
