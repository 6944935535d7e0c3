"""Dataset augmentation (the notes' regularization by more data): random flips, translations,
rotations, zooms, elastic distortions and Gaussian noise of each training batch, and the target
side of it (label noise, mixup), on the training device, drawn from seeded generators.

Rows arrive scaled and flattened; the pixel changes need the picture, so they undo the scaling,
view the rows as [C, H, W] images, move pixels (zero = black at the borders), and scale again.
Rotation, zoom and elastic distortion are one sampling grid per batch (``F.affine_grid`` plus the
smoothed displacement field, one ``F.grid_sample``): no Python loop over images.
Evaluation and predict never see this: only the engine's training step calls it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from mlptrain.config import AugmentSpec, ElasticSpec

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


def gaussian_band(n: int, sigma: float, device: torch.device) -> torch.Tensor:
    """[n, n]: a normalized Gaussian of ``sigma`` pixels, truncated at 3 sigma, as a banded matrix: its product
    with a row of n pixels is that row smoothed, black beyond the border (scipy's ``mode="constant"``)."""
    radius = max(1, int(3 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    i = torch.arange(n, device=device)
    gap = i[None, :] - i[:, None]  # column minus row
    return torch.where(gap.abs() <= radius, kernel[(gap + radius).clamp(0, 2 * radius)], 0.0)


def gaussian_smooth(field: torch.Tensor, sigma: float, bands: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """[B, K, H, W] smoothed by ``gaussian_band`` along columns and rows: two matrix products, each one GEMM
    over the batch (the CPU's convolution kernels are slow on images this small). ``bands``: the two
    matrices, made once per run rather than once per batch."""
    h, w = field.shape[-2:]
    rows, cols = bands if bands is not None else (gaussian_band(h, sigma, field.device), gaussian_band(w, sigma, field.device))
    across = (field.reshape(-1, w) @ cols.T).reshape(field.shape)
    return (across.transpose(-1, -2).reshape(-1, h) @ rows.T).reshape(*field.shape[:-2], w, h).transpose(-1, -2)


def pixel_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """[H*W, 3]: each pixel's centre in ``grid_sample``'s coordinates (align_corners=False), and a 1."""
    ys = (2 * torch.arange(h, device=device, dtype=torch.float32) + 1) / h - 1
    xs = (2 * torch.arange(w, device=device, dtype=torch.float32) + 1) / w - 1
    return torch.stack([xs.repeat(h), ys.repeat_interleave(w), torch.ones(h * w, device=device)], dim=1)


def warp(
    images: torch.Tensor, degrees: Optional[torch.Tensor] = None, zoom: Optional[torch.Tensor] = None,
    displacement: Optional[torch.Tensor] = None, base: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Each image [C, H, W] of the batch rotated by its own ``degrees`` (counter-clockwise as shown, like
    torchvision's rotate) and zoomed about the centre by its own ``zoom`` (> 1 enlarges); then each output
    pixel reads the image at its own place plus ``displacement`` [B, 2, H, W] (x then y, in pixels, Simard
    et al.'s convention); bilinear, black outside the image.

    One affine grid for the batch (``F.affine_grid``'s, as one product with ``base``, the
    ``pixel_grid`` made once per run), the displacement added to it, one ``grid_sample``. The affine
    part works in pixel units, so a rotation of a non-square image stays a rotation.
    """
    b, c, h, w = images.shape
    linear = torch.eye(2, device=images.device, dtype=images.dtype).expand(b, 2, 2)
    if degrees is not None:
        t = torch.deg2rad(degrees.to(images.dtype))
        cos, sin = torch.cos(t), torch.sin(t)
        # output pixel p reads the input at this matrix times p; with y pointing down on screen, that turns
        # the content counter-clockwise by t (a test holds it to torch.rot90)
        linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        if h != w:  # normalized coordinates are (x / (W/2), y / (H/2)): rotate in pixels, not in those
            to_px = torch.tensor([w / 2, h / 2], device=images.device, dtype=images.dtype)
            linear = linear * to_px[None, None, :] / to_px[None, :, None]
    if zoom is not None:
        linear = linear / zoom.to(images.dtype)[:, None, None]
    theta = torch.cat([linear, torch.zeros(b, 2, 1, device=images.device, dtype=images.dtype)], dim=2)
    base = pixel_grid(h, w, images.device) if base is None else base
    grid = (base @ theta.transpose(1, 2)).view(b, h, w, 2)
    if displacement is not None:  # pixels -> normalized units (align_corners=False: 2 / size per pixel)
        per_px = torch.tensor([2 / w, 2 / h], device=images.device, dtype=images.dtype)
        grid = grid + displacement.permute(0, 2, 3, 1) * per_px
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def elastic_field(
    b: int, h: int, w: int, spec: ElasticSpec, generator: torch.Generator, device: torch.device,
    bands: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
) -> torch.Tensor:
    """Simard et al. (2003): displacements drawn from U(-1, 1) per pixel and axis, smoothed by a Gaussian
    of sigma, scaled by alpha: [B, 2, H, W] in pixels."""
    field = torch.rand((b, 2, h, w), generator=generator, device=device) * 2 - 1
    return gaussian_smooth(field, spec.sigma, bands) * spec.alpha


def build(
    spec: AugmentSpec, image_shape: Optional[Sequence[int]], scaler: dict[str, Any], device: torch.device
) -> Optional[Augment]:
    """The per-batch augmentation, or None when nothing is switched on.

    Its random draws come from the generator the engine passes in (seeded from train.seed and
    saved in last.pt with the run's other random streams, so a resumed run draws the same).
    """
    if not spec.active:
        return None
    moves = spec.shift or spec.crop  # padding N and cropping back is a shift of up to N (config refuses both)
    warps = any(spec.moves(key) for key in ("rotate", "scale", "elastic"))
    geometric = spec.hflip or moves > 0 or warps
    base = _unshifted(image_shape[1], image_shape[2], moves, device) if moves > 0 and image_shape else None
    grid = bands = None
    if warps and image_shape:  # made once: the pixel grid, the elastic field's Gaussian bands
        h, w = int(image_shape[1]), int(image_shape[2])
        grid = pixel_grid(h, w, device)
        bands = (gaussian_band(h, spec.elastic.sigma, device), gaussian_band(w, spec.elastic.sigma, device))
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
            if moves > 0:
                d = torch.randint(-moves, moves + 1, (2, b), generator=generator, device=x.device)
                images = translate(images, d[0], d[1], moves, base)
            if warps:
                images = warp(images, *_draw_warp(spec, images.shape, generator, bands), base=grid)
            x = images.reshape(b, -1)
            if scale is not None:
                x = (x - shift) / scale
        if spec.noise > 0:
            x = x + spec.noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x

    return apply


def _draw_warp(
    spec: AugmentSpec, shape: torch.Size, generator: torch.Generator, bands: Optional[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
    """This batch's angles, zooms and displacement field (None for what is switched off), in that order."""
    b, _, h, w = shape
    device = generator.device
    degrees = zoom = field = None
    if spec.rotate > 0:
        degrees = (torch.rand(b, generator=generator, device=device) * 2 - 1) * spec.rotate
    if spec.scale is not None:
        low, high = spec.scale
        zoom = low + (high - low) * torch.rand(b, generator=generator, device=device)
    if spec.elastic.alpha > 0:
        field = elastic_field(b, h, w, spec.elastic, generator, device, bands)
    return degrees, zoom, field


def label_noise(y: torch.Tensor, fraction: float, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Each label replaced, with probability ``fraction``, by a class drawn uniformly from all ``n_classes``
    (so (K - 1) / K of the replaced labels change). Works on class indices [N] and on binary 0/1 targets
    [N, 1]; in expectation it is label smoothing with ε = fraction."""
    swap = torch.rand(y.shape, generator=generator, device=y.device) < fraction
    drawn = torch.randint(0, n_classes, y.shape, generator=generator, device=y.device)
    return torch.where(swap, drawn.to(y.dtype), y)


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, n_classes: Optional[int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mixup (Zhang et al. 2018): row i becomes λ_i x_i + (1 - λ_i) x_π(i) for a random permutation π of
    the batch, its target λ_i t_i + (1 - λ_i) t_π(i), with λ_i ~ Beta(alpha, alpha), one per pair.

    ``n_classes``: class indices [N] become one-hot targets first (None: targets are mixed as they
    are: binary 0/1, multilabel, regression values). Returns the mixed rows and targets, λ and π.
    """
    b = len(x)
    concentration = torch.full((b, 2), float(alpha), device=x.device, dtype=torch.float32)
    # Beta(α, α) is the first coordinate of a Dirichlet(α, α); torch.distributions takes no generator,
    # the sampler it calls does
    lam = torch._sample_dirichlet(concentration, generator=generator)[:, 0].to(x.dtype)
    perm = torch.randperm(b, generator=generator, device=x.device)
    t = F.one_hot(y, n_classes).to(x.dtype) if n_classes is not None else y
    lx = lam.view(b, *([1] * (x.dim() - 1)))
    lt = lam.view(b, *([1] * (t.dim() - 1))).to(t.dtype)
    return lx * x + (1 - lx) * x[perm], lt * t + (1 - lt) * t[perm], lam, perm


def examples(
    apply: Augment, rows: torch.Tensor, image_shape: Sequence[int], scaler: dict[str, Any], seed: int, draws: int = 2,
) -> torch.Tensor:
    """What augmentation does to a few training images, as one picture [C, H', W'] for TensorBoard: the
    images as read in the top row, ``draws`` augmented versions of each below, in pixels clipped to [0, 1].

    The draws come from a generator of their own (``seed``), so the training step's stream is untouched."""
    generator = torch.Generator(device=rows.device).manual_seed(seed)
    c, h, w = (int(d) for d in image_shape)
    versions = [rows] + [apply(rows, generator) for _ in range(draws)]
    if scaler.get("kind", "none") != "none":
        shift = torch.tensor(scaler["shift"], dtype=rows.dtype, device=rows.device)
        scale = torch.tensor(scaler["scale"], dtype=rows.dtype, device=rows.device)
        versions = [v * scale + shift for v in versions]
    zoom = max(1, 28 // h)  # 8x8 digits drawn 3x as large: a card of readable size
    pad = 1
    row_pictures = []
    for v in versions:
        images = v.reshape(len(v), c, h, w).clamp(0, 1)
        images = images.repeat_interleave(zoom, dim=2).repeat_interleave(zoom, dim=3)
        images = F.pad(images, (pad, pad, pad, pad), value=0.5)  # a grey frame between images
        row_pictures.append(torch.cat(list(images), dim=2))  # [C, H, N*W]
    return torch.cat(row_pictures, dim=1).detach().float().cpu()
