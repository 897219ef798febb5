"""EDM (Karras et al. 2022) maths for the latent diffusion model: preconditioning, log-normal noise
levels, loss weighting, conditioning dropout. Pure functions, safe inside `jax.jit`.

`model` below is any callable `model(x_BxTxC, sigma_B, cond_BxTxC, cond_mask_B, **kwargs)
-> F_BxTxC` (the raw network, e.g. `UNet1D`; kwargs: `frame_mask_BxT`, and `dropout_key` in
training); `precondition` turns it into the denoiser D(x; σ).
The null condition is `cond_mask_B = 0` (the U-Net zeroes the mix latent and says so on an extra
input channel).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Model = Callable[..., jax.Array]


def _b11(v_B: jax.Array) -> jax.Array:
  return v_B.reshape(-1, 1, 1)


def scalings(sigma: jax.Array, sigma_data: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """EDM's (c_skip, c_out, c_in) for noise level σ."""
  sd2 = sigma_data ** 2
  s2 = jnp.square(sigma)
  c_skip = sd2 / (s2 + sd2)
  c_out = sigma * sigma_data * jax.lax.rsqrt(s2 + sd2)
  c_in = jax.lax.rsqrt(s2 + sd2)
  return c_skip, c_out, c_in


def precondition(model: Model, x_BxTxC: jax.Array, sigma_B: jax.Array, cond_BxTxC: jax.Array,
                 cond_mask_B: jax.Array, sigma_data: float,
                 frame_mask_BxT: jax.Array | None = None,
                 dropout_key: jax.Array | None = None) -> jax.Array:
  """The denoiser D(x; σ) = c_skip x + c_out F(c_in x; σ) (the network sees c_noise = log σ / 4)."""
  sigma_B = jnp.broadcast_to(jnp.asarray(sigma_B, jnp.float32), x_BxTxC.shape[:1])
  c_skip, c_out, c_in = scalings(_b11(sigma_B), sigma_data)
  kwargs = {k: v for k, v in (("frame_mask_BxT", frame_mask_BxT), ("dropout_key", dropout_key))
            if v is not None}
  f_BxTxC = model(c_in * x_BxTxC, sigma_B, cond_BxTxC, cond_mask_B, **kwargs)
  return c_skip * x_BxTxC + c_out * f_BxTxC.astype(x_BxTxC.dtype)


def sample_sigma(key: jax.Array, shape: tuple[int, ...], p_mean: float, p_std: float) -> jax.Array:
  """Training noise levels: ln σ ~ N(p_mean, p_std²)."""
  return jnp.exp(p_mean + p_std * jax.random.normal(key, shape, jnp.float32))


def loss_weight(sigma: jax.Array, sigma_data: float) -> jax.Array:
  """λ(σ) = (σ² + σ_data²) / (σ σ_data)² = 1 / c_out², so every σ contributes a unit-scale loss."""
  return (jnp.square(sigma) + sigma_data ** 2) / jnp.square(sigma * sigma_data)


def _weighted_error_B(model: Model, target_BxTxC: jax.Array, cond_BxTxC: jax.Array,
                      cond_mask_B: jax.Array, sigma_B: jax.Array, noise_BxTxC: jax.Array,
                      sigma_data: float, dropout_key: jax.Array | None = None
                      ) -> tuple[jax.Array, jax.Array]:
  x_BxTxC = target_BxTxC + _b11(sigma_B) * noise_BxTxC
  d_BxTxC = precondition(model, x_BxTxC, sigma_B, cond_BxTxC, cond_mask_B, sigma_data,
                         dropout_key=dropout_key)
  mse_B = jnp.mean(jnp.square(d_BxTxC - target_BxTxC), axis=(1, 2))
  return loss_weight(sigma_B, sigma_data) * mse_B, mse_B


def denoising_loss(model: Model, target_BxTxC: jax.Array, cond_BxTxC: jax.Array, key: jax.Array,
                   cfg: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
  """EDM training loss with conditioning dropout; `cfg` is the `diffusion` config section.

  Each example draws its own σ (log-normal) and, with probability `cfg.p_uncond`, the null
  condition. Returns the mean weighted loss and metrics: unweighted denoising MSE, the share of
  examples that kept their condition, and the weighted loss split by σ below / above σ_data.
  The network's dropout (active in `model.train()` mode) draws from `key` too.
  """
  b = target_BxTxC.shape[0]
  k_sigma, k_noise, k_drop, k_dropout = jax.random.split(key, 4)
  sigma_B = sample_sigma(k_sigma, (b,), cfg.p_mean, cfg.p_std)
  noise_BxTxC = jax.random.normal(k_noise, target_BxTxC.shape, target_BxTxC.dtype)
  cond_mask_B = (jax.random.uniform(k_drop, (b,)) >= cfg.p_uncond).astype(jnp.float32)
  loss_B, mse_B = _weighted_error_B(model, target_BxTxC, cond_BxTxC, cond_mask_B, sigma_B,
                                    noise_BxTxC, cfg.sigma_data, k_dropout)
  low_B = (sigma_B < cfg.sigma_data).astype(jnp.float32)
  aux = {
      "loss": jnp.mean(loss_B),
      "mse": jnp.mean(mse_B),
      "cond_fraction": jnp.mean(cond_mask_B),
      "loss_low_sigma": jnp.sum(loss_B * low_B) / jnp.maximum(jnp.sum(low_B), 1.0),
      "loss_high_sigma": jnp.sum(loss_B * (1 - low_B)) / jnp.maximum(jnp.sum(1 - low_B), 1.0),
  }
  return aux["loss"], aux


def val_loss_at_sigma(model: Model, target_BxTxC: jax.Array, cond_BxTxC: jax.Array,
                      sigma: float | jax.Array, key: jax.Array, use_cond: bool, *,
                      sigma_data: float) -> jax.Array:
  """Weighted denoising loss at one fixed σ, with the mix (use_cond) or the null condition.

  Validation logs it at σ ∈ {0.2, 0.5, 1.0}; the gap between the two conditions shows how much the
  model uses the mix.
  """
  b = target_BxTxC.shape[0]
  sigma_B = jnp.full((b,), sigma, jnp.float32)
  noise_BxTxC = jax.random.normal(key, target_BxTxC.shape, target_BxTxC.dtype)
  cond_mask_B = jnp.full((b,), jnp.asarray(use_cond, jnp.float32))
  loss_B, _ = _weighted_error_B(model, target_BxTxC, cond_BxTxC, cond_mask_B, sigma_B,
                                noise_BxTxC, sigma_data)
  return jnp.mean(loss_B)
