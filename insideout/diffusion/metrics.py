"""Metrics of generated samples: a Fréchet distance in an in-part classifier's features, precision and recall by
nearest neighbours, the energy distance of 2-D point clouds, and PSNR.

* ``frechet_distance``: fit a Gaussian to each set of feature vectors (means mu, covariances S) and compute the
  Fréchet (2-Wasserstein) distance between the two Gaussians, ``|mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})``
  (Heusel et al.'s FID uses Inception features; ours uses ``FeatureNet``, a small classifier trained in this part on
  real shape images, so the number is not comparable with published FIDs and is never called FID).
* ``precision_recall``: Kynkäänniemi et al.'s estimate. Each real feature vector gets a ball reaching its k-th
  nearest real neighbour; *precision* is the fraction of generated vectors inside some real ball (samples look
  real), *recall* the fraction of real vectors inside some generated ball (the real variety is covered).
* ``energy_distance``: 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Székely), zero exactly when the distributions agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from insideout.diffusion.data import COLOUR_NAMES, Scenes, check_images, to_model
from insideout.utils import DictConfig


def _features_2d(x: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.is_tensor(x) or x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor (n, dim) of feature vectors")
    if x.shape[0] < 2:
        raise ValueError(f"{name} has {x.shape[0]} rows: need at least 2 samples")
    return x.detach().double().cpu()


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (d,), unbiased covariance (d, d)) in float64."""
    f = _features_2d(features, "features")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def frechet_from_stats(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    """Fréchet distance between N(mu1, s1) and N(mu2, s2), in float64.

    Tr((S1 S2)^{1/2}) is computed as the sum of the square roots of the eigenvalues of the symmetric matrix
    S1^{1/2} S2 S1^{1/2}, which has the same eigenvalues as S1 S2 and is positive semi-definite.
    """
    evals, evecs = torch.linalg.eigh(s1)
    root1 = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    middle = root1 @ s2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * trace_root)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (n, d)."""
    a, b = _features_2d(a, "a"), _features_2d(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature widths differ: {a.shape[1]} vs {b.shape[1]}")
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of ``fake`` against ``real`` with k-nearest-neighbour balls (Kynkäänniemi et al.)."""
    real, fake = _features_2d(real, "real"), _features_2d(fake, "fake")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k={k!r}: need 1 <= k < the size of each set")

    def radii(x: torch.Tensor) -> torch.Tensor:  # distance to the k-th nearest other point
        d = torch.cdist(x, x)
        return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0

    cross = torch.cdist(fake, real)  # (n_fake, n_real)
    precision = (cross <= radii(real)[None, :]).any(dim=1).double().mean().item()
    recall = (cross <= radii(fake)[:, None]).any(dim=0).double().mean().item()
    return precision, recall


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| between two point clouds (n, d).

    Every expectation is the mean over all pairs, i = j included (the V-statistic), which is never negative.
    """
    x, y = _features_2d(x, "x"), _features_2d(y, "y")
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def psnr(reference: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """(N,) peak signal-to-noise ratio in dB of images in [0, 1]: 10 log10(1 / mean squared error)."""
    a = check_images(reference, name="reference")
    b = check_images(reconstruction, name="reconstruction")
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = ((a.double() - b.double()) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return 10 * torch.log10(1 / mse)


# ---- the feature network ---------------------------------------------------------------------------------------

# Targets per colour: present, then (if present) shape (3 classes), large, in the right half, in the bottom half.
N_SLOT = 7


@dataclass
class FeatureNetConfig(DictConfig):
    image_size: int = 16
    channels: int = 32
    features: int = 64

    def __post_init__(self) -> None:
        for name in ("image_size", "channels", "features"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FeatureNetConfig.{name}={value!r}: must be a positive integer")
        if self.image_size % 4:
            raise ValueError(f"FeatureNetConfig.image_size={self.image_size}: must be divisible by 4")


class FeatureNet(nn.Module):
    """A small CNN that reads, for each colour, whether an object of that colour is present and its shape, size and
    half-plane position; its penultimate layer (``features``) is the space of the Fréchet distance."""

    def __init__(self, config: FeatureNetConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.GELU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.GELU(),  # H/2
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.GELU(),  # H/4
            nn.Flatten(),
            nn.Linear(2 * c * (config.image_size // 4) ** 2, config.features), nn.GELU(),
        )
        self.head = nn.Linear(config.features, len(COLOUR_NAMES) * N_SLOT)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, features) for images (N, 3, H, W) in [0, 1]."""
        return self.body(to_model(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images)).view(-1, len(COLOUR_NAMES), N_SLOT)  # (N, colours, 7)


def feature_targets(scenes: Scenes) -> tuple[torch.Tensor, torch.Tensor]:
    """(present (N, K) float, attributes (N, K, 4) long: shape, large, right, bottom; -1 where absent)."""
    n, k = len(scenes), len(COLOUR_NAMES)
    present = torch.zeros(n, k)
    attrs = torch.full((n, k, 4), -1, dtype=torch.long)
    for slot in range(2):
        rows = torch.nonzero(scenes.colour[:, slot] >= 0).squeeze(1)
        col = scenes.colour[rows, slot]
        present[rows, col] = 1
        attrs[rows, col, 0] = scenes.shape[rows, slot]
        attrs[rows, col, 1] = scenes.size[rows, slot]
        attrs[rows, col, 2] = (scenes.cx[rows, slot] >= 8).long()
        attrs[rows, col, 3] = (scenes.cy[rows, slot] >= 8).long()
    return present, attrs


def feature_loss(model: FeatureNet, batch: dict) -> tuple[torch.Tensor, dict]:
    """Presence (BCE) + shape (CE) + size/right/bottom (BCE) of the present objects."""
    out = model(batch["images"])  # (B, K, 7)
    present, attrs = batch["present"], batch["attrs"]
    loss_present = F.binary_cross_entropy_with_logits(out[..., 0], present)
    mask = present.bool()
    shape_loss = F.cross_entropy(out[..., 1:4][mask], attrs[..., 0][mask])
    binary = F.binary_cross_entropy_with_logits(out[..., 4:7][mask], attrs[..., 1:4][mask].float())
    return loss_present + shape_loss + binary, {}


@torch.no_grad()
def feature_accuracy(model: FeatureNet, images: torch.Tensor, scenes: Scenes) -> dict[str, float]:
    """How well the feature network reads real images: presence of each colour, and shape/size/position of the
    present objects."""
    out = model(check_images(images))
    present, attrs = feature_targets(scenes)
    mask = present.bool()
    return {
        "presence": ((out[..., 0] > 0).float() == present).float().mean().item(),
        "shape": (out[..., 1:4].argmax(-1)[mask] == attrs[..., 0][mask]).float().mean().item(),
        "size": ((out[..., 4] > 0).long()[mask] == attrs[..., 1][mask]).float().mean().item(),
        "position": ((out[..., 5:7] > 0).long()[mask] == attrs[..., 2:4][mask]).all(-1).float().mean().item(),
    }


@torch.no_grad()
def extract_features(model: FeatureNet, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, features) float64 feature vectors of images in [0, 1] (checked), in batches."""
    images = check_images(images, resolution=model.config.image_size)
    model.eval()
    return torch.cat([model.features(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]).double()
