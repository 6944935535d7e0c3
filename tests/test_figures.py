"""The confusion matrix picture that TensorBoard shows at the end of a classification run."""

from __future__ import annotations

import numpy as np
import pytest

from mlptrain.figures import confusion_image


def _dark_cells(image: np.ndarray) -> np.ndarray:
    """Pixel positions of the shading's dark blue (not the ink of the text)."""
    r, g, b = (image[..., c].astype(int) for c in range(3))
    return np.argwhere((b - r > 60) & (r < 60))


@pytest.mark.parametrize("k", [2, 10])
def test_a_confusion_matrix_image_is_shaded_where_the_counts_are(k):
    names = [f"class {i}" for i in range(k)]
    right = confusion_image(np.eye(k, dtype=int) * 30, names, "all right")
    wrong = confusion_image(np.fliplr(np.eye(k, dtype=int)) * 30, names, "all wrong")
    assert right.dtype == np.uint8 and right.shape[2] == 3 and max(right.shape[:2]) <= 900
    for image, sign in ((right, 1), (wrong, -1)):  # rows: true class down, columns: predicted across
        ys, xs = _dark_cells(image).T
        assert len(ys) > 1000
        assert sign * np.corrcoef(xs, ys)[0, 1] > 0.7  # (two squares on a diagonal: 0.75)


@pytest.mark.parametrize("k, name", [(10, "a class name far too long to be shown whole {}"), (36, "c{}"), (200, "c{}")])
def test_long_names_many_classes_and_empty_rows_stay_in_a_bounded_image(k, name):
    counts = np.eye(k, dtype=int) * 5
    counts[0] = 0  # a class with no rows in this split
    with np.errstate(all="raise"):
        image = confusion_image(counts, [name.format(i) for i in range(k)], "val")
    assert image.shape[2] == 3 and max(image.shape[:2]) <= 1000
    assert len(_dark_cells(image)) > 0
