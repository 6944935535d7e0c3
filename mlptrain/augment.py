"""Dataset augmentation (the notes' regularization by more data): random flips, translations and
Gaussian noise applied to each training batch on the training device, drawn from a seeded generator.

Rows arrive scaled and flattened; flips and shifts need the picture, so they undo the scaling,
view the rows as [C, H, W] images, move pixels (zero = black at the borders), and scale again.
Evaluation and predict never see this: only the engine's training step calls it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from mlptrain.config import AugmentSpec

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # (batch, the engine's augment generator)


def _unshifted(h: int, w: int, limit: int, device: torch.device) -> torch.Tensor:
    """[1, H*W]: where each pixel of an image sits in its zero-padded copy, flattened."""
    width = w + 2 * limit
    rows = torch.arange(h, device=device) + limit
    cols = torch.arange(w, device=device) + limit
    return (rows[:, None] * width + cols[None, :]).reshape(1, -1)


def translate(
    images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, limit: int, base: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Each image [C, H, W] of the batch moved by its own (dy, dx) pixels, |dy|, |dx| <= limit, black fill.

    One gather over the zero-padded batch: no Python loop over images. ``base`` is
    ``_unshifted(H, W, limit)``, made once per run rather than once per batch.
    """
    b, c, h, w = images.shape
    width = w + 2 * limit
    padded = F.pad(images, (limit, limit, limit, limit)).reshape(b, c, -1)
    base = _unshifted(h, w, limit, images.device) if base is None else base
    index = base - (dy * width + dx)[:, None]  # moving the image by +d reads the pixel d before
    return padded.gather(2, index[:, None, :].expand(b, c, h * w)).reshape(b, c, h, w)


def build(
    spec: AugmentSpec, image_shape: Optional[Sequence[int]], scaler: dict[str, Any], device: torch.device
) -> Optional[Augment]:
    """The per-batch augmentation, or None when nothing is switched on.

    Its random draws come from the generator the engine passes in (seeded from train.seed and
    saved in last.pt with the run's other random streams, so a resumed run draws the same).
    """
    if not spec.active:
        return None
    geometric = spec.hflip or spec.shift > 0
    base = _unshifted(image_shape[1], image_shape[2], spec.shift, device) if spec.shift > 0 and image_shape else None
    shift = scale = None
    if geometric and scaler.get("kind", "none") != "none":
        shift = torch.tensor(scaler["shift"], dtype=torch.float32, device=device)
        scale = torch.tensor(scaler["scale"], dtype=torch.float32, device=device)

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if geometric:
            assert image_shape is not None
            b = len(x)
            images = (x * scale + shift if scale is not None else x).reshape(b, *image_shape)
            if spec.hflip:
                flip = torch.rand(b, generator=generator, device=x.device) < 0.5
                images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            if spec.shift > 0:
                d = torch.randint(-spec.shift, spec.shift + 1, (2, b), generator=generator, device=x.device)
                images = translate(images, d[0], d[1], spec.shift, base)
            x = images.reshape(b, -1)
            if scale is not None:
                x = (x - shift) / scale
        if spec.noise > 0:
            x = x + spec.noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x

    return apply
