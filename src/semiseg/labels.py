"""The label-space constants every layer shares (data, components, metrics, pictures).

Masks use class ids 0 … C−1; `IGNORE_INDEX` marks pixels that count in no loss and no metric:
void/ignored annotations and the padding added around crops smaller than the crop size
(docs/datasets.md).
"""

IGNORE_INDEX = 255
