"""Figures of Part 5: image grids with captions, and 2-D point clouds."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from insideout.diffusion.data import check_images


def image_grid(images: torch.Tensor, titles: list[str] | None = None, ncol: int = 8, title: str | None = None,
               scale: float = 1.1, fontsize: int = 6, axes=None):
    """Show images (N, 3, H, W) in [0, 1] in a grid, pixel-exact (no smoothing), with optional captions."""
    images = check_images(images)
    n = images.shape[0]
    nrow = -(-n // ncol)
    if axes is None:
        fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * scale, nrow * scale * (1.25 if titles else 1.0)),
                                 squeeze=False)
    else:
        fig = axes.flat[0].figure
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            if titles:
                ax.set_title(_wrap(titles[i]), fontsize=fontsize)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int = 18) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines)


def scatter(ax, points: torch.Tensor, title: str, color: str = "C0", s: float = 1.0, lim: float = 3.0):
    """A 2-D point cloud on square axes."""
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=s, color=color, alpha=0.5, linewidths=0)
    ax.set(title=title, xlim=(-lim, lim), ylim=(-lim, lim), xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
    return ax


def table(df, digits: int = 3):
    """A copy of a DataFrame with its floats written with ``digits`` decimals and NaN as a dash, for display
    (plain DataFrame HTML: unlike a pandas Styler it carries no random id, so re-executions compare equal)."""
    import math

    def fmt(v):
        if isinstance(v, float):
            return "—" if math.isnan(v) else f"{v:.{digits}f}"
        return v

    return df.map(fmt)
