"""Fréchet distance between Gaussians fitted to two sets of feature vectors."""
from __future__ import annotations

import numpy as np

from bassgen.errors import BassgenError


def gaussian_stats(features_NxD, name: str = "features") -> tuple[np.ndarray, np.ndarray]:
  """Mean [D] and covariance [D, D] (unbiased) of N >= 2 feature vectors."""
  x = np.asarray(features_NxD, dtype=np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise BassgenError(f"{name}: need at least 2 feature vectors of shape [N, D] to fit a "
                       f"Gaussian, got shape {x.shape}. Give more (or longer) audio.")
  if not np.all(np.isfinite(x)):
    raise BassgenError(f"{name}: the features contain NaN or Inf. Check the embedding function.")
  return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), >= 0; 0 for equal Gaussians.

  The matrix square roots are taken by symmetric eigendecomposition, which is exact and stable
  for the positive semi-definite (possibly singular) covariances of small sets.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
  if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
    raise BassgenError(f"cannot compare Gaussians of different dimension: means {mu1.shape} vs "
                       f"{mu2.shape}, covariances {cov1.shape} vs {cov2.shape}. Use the same "
                       "embedding for both sets.")
  if np.array_equal(mu1, mu2) and np.array_equal(cov1, cov2):
    return 0.0   # exact; the square roots below carry ~sqrt(machine eps) rounding noise
  w1, v1 = np.linalg.eigh((cov1 + cov1.T) / 2)
  sqrt1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
  middle = sqrt1 @ cov2 @ sqrt1
  w = np.linalg.eigvalsh((middle + middle.T) / 2)
  tr_sqrt = np.sum(np.sqrt(np.clip(w, 0, None)))
  diff = mu1 - mu2
  return max(0.0, float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt))


def frechet_distance_features(feats_a_NxD, feats_b_MxD) -> float:
  """Fréchet distance between Gaussians fitted to two sets of feature vectors."""
  return frechet_distance(*gaussian_stats(feats_a_NxD, "set a"),
                          *gaussian_stats(feats_b_MxD, "set b"))
