"""Pictures for TensorBoard, drawn with Pillow alone (torchvision's dependency; no plotting library).

A confusion matrix read as a table of numbers hides where the errors are; as an image the diagonal
and the classes it confuses show at a glance.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

_LOW = np.array([247, 251, 255], dtype=float)  # an empty row share: near white
_HIGH = np.array([8, 48, 107], dtype=float)  # a whole row's share: dark blue
_INK = (33, 37, 41)
_GRID = (222, 226, 230)
_NAME_CHARS = 14  # longer class names are cut, with an ellipsis in the middle
_PAD = 8


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _text_size(font: Any, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return right - left, bottom - top


def _short(name: str) -> str:
    """A long name cut in the middle: names that share a prefix ("class_a_…") keep their ends apart."""
    if len(name) <= _NAME_CHARS:
        return name
    head = (_NAME_CHARS - 1) // 2
    return name[:head] + "…" + name[len(name) - (_NAME_CHARS - 1 - head):]


def _vertical(text: str, font: Any) -> Any:
    """``text`` turned to read bottom to top, as an 8-bit mask to paste in ink."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(mask).text((1 - left, 1 - top), text, fill=255, font=font)
    return mask.rotate(90, expand=True)


def confusion_image(counts: np.ndarray, names: Sequence[str], title: str) -> np.ndarray:
    """A confusion matrix (rows: true class, columns: predicted) as an H x W x 3 uint8 image.

    Each cell is shaded by its share of the true class's rows (on a square-root scale), so a rare
    class's errors show as plainly as a common one's; the count (and, in large cells, that share)
    is written in it, and an empty cell stays blank.
    Class names label the axes while a cell is tall enough for them; beyond that the classes
    run in the order of the checkpoint's ``class_names``.
    """
    from PIL import Image, ImageDraw

    counts = np.asarray(counts, dtype=np.int64)
    k = len(counts)
    cell = int(np.clip(560 // max(k, 1), 4, 130))
    label_font, title_font = _font(13), _font(14)
    show_names = cell >= 16
    show_counts = cell >= 26
    show_share = cell >= 48
    count_font, share_font = _font(min(22, max(10, cell // 4))), _font(12 if cell >= 100 else 11)
    names = [_short(str(n)) for n in names] if show_names else []

    name_w = max((_text_size(label_font, n)[0] for n in names), default=0)
    _, text_h = _text_size(label_font, "Hg")
    rotate_columns = show_names and name_w > cell - 4
    order = "" if show_names else " (in class_names order)"
    axis_h = _text_size(label_font, "predicted class")[1]
    left = _PAD + axis_h + _PAD + (name_w + _PAD if show_names else 0)
    top = _PAD + _text_size(title_font, title)[1] + _PAD
    grid = cell * k
    below = (name_w if rotate_columns else text_h) + _PAD if show_names else 0
    width = max(left + grid + _PAD, _PAD + _text_size(title_font, title)[0] + _PAD)
    height = top + grid + _PAD + below + axis_h + _PAD

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((_PAD, _PAD), title, fill=_INK, font=title_font)

    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    shade = np.sqrt(share)  # a few errors in a class (a share of 2-5 %) still show against the white
    for i in range(k):
        for j in range(k):
            x, y = left + j * cell, top + i * cell
            colour = tuple(int(c) for c in np.rint(_LOW + (_HIGH - _LOW) * shade[i, j]))
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour, outline=_GRID if cell >= 8 else None)
            if not show_counts or not counts[i, j]:
                continue  # an empty cell stays blank, so the errors stand out
            ink = "white" if shade[i, j] > 0.55 else _INK
            centre_y = y + cell / 2 - (cell // 8 if show_share else 0)
            draw.text((x + cell / 2, centre_y), str(counts[i, j]), fill=ink, font=count_font, anchor="mm")
            if show_share:
                text = f"{share[i, j]:.0%}" if share[i, j] >= 0.005 else "<1%"
                draw.text((x + cell / 2, centre_y + cell // 4), text, fill=ink, font=share_font, anchor="mm")

    for i, name in enumerate(names):  # true classes down the left, predicted along the bottom
        draw.text((left - _PAD, top + i * cell + cell / 2), name, fill=_INK, font=label_font, anchor="rm")
        x = left + i * cell + cell / 2
        if rotate_columns:
            mask = _vertical(name, label_font)
            image.paste(_INK, (int(x - mask.width / 2), top + grid + _PAD), mask)
        else:
            draw.text((x, top + grid + _PAD), name, fill=_INK, font=label_font, anchor="mt")

    draw.text((left + grid / 2, height - _PAD), f"predicted class{order}", fill=_INK, font=label_font, anchor="mb")
    mask = _vertical(f"true class{order}", label_font)
    image.paste(_INK, (_PAD, int(top + grid / 2 - mask.height / 2)), mask)
    return np.asarray(image)
