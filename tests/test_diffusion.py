"""EDM maths: preconditioning, noise levels, loss weighting, conditioning dropout, trainability."""
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from bassgen.config_loading import load_config
from bassgen.diffusion import edm
from bassgen.models import unet

LDM_CONFIG = pathlib.Path(__file__).parents[1] / "configs" / "ldm.py"


def _config(variant):
  return load_config(f"{LDM_CONFIG}:{variant}")


def _dcfg(**overrides):
  cfg = ml_collections.ConfigDict(dict(sigma_data=0.5, p_mean=-1.2, p_std=1.2, p_uncond=0.1))
  cfg.update(overrides)
  return cfg


def _zero_model(x, sigma, cond, cond_mask, **kwargs):
  return jnp.zeros_like(x)


def _cond_model(x, sigma, cond, cond_mask, **kwargs):
  """A network whose output uses the condition only when it is present."""
  return 0.5 * x + cond * cond_mask[:, None, None]


def test_scalings_give_unit_weighted_loss_scale_and_identity_at_zero_noise():
  sigma = jnp.array([1e-3, 0.1, 0.5, 2.0, 80.0])
  c_skip, c_out, c_in = edm.scalings(sigma, 0.5)
  np.testing.assert_allclose(edm.loss_weight(sigma, 0.5) * c_out ** 2, 1.0, rtol=1e-5)
  np.testing.assert_allclose(c_in ** 2 * (sigma ** 2 + 0.25), 1.0, rtol=1e-5)
  c_skip0, c_out0, _ = edm.scalings(jnp.zeros(1), 0.5)
  assert float(c_skip0[0]) == 1.0 and float(c_out0[0]) == 0.0


def test_precondition_scales_input_and_output_as_edm():
  seen = {}

  def model(x, sigma, cond, cond_mask):
    seen.update(x=x, sigma=sigma, mask=cond_mask)
    return jnp.tanh(x) + cond

  x = jax.random.normal(jax.random.key(0), (3, 8, 4)) * 3.0
  cond = jax.random.normal(jax.random.key(1), (3, 8, 4))
  sigma = jnp.array([0.1, 1.0, 10.0])
  d = edm.precondition(model, x, sigma, cond, jnp.array([1.0, 0.0, 1.0]), 0.5)
  c_skip, c_out, c_in = (a[:, None, None] for a in edm.scalings(sigma, 0.5))
  np.testing.assert_allclose(seen["x"], c_in * x, rtol=1e-6)
  np.testing.assert_allclose(seen["sigma"], sigma)
  np.testing.assert_allclose(seen["mask"], [1.0, 0.0, 1.0])
  np.testing.assert_allclose(d, c_skip * x + c_out * (jnp.tanh(c_in * x) + cond), rtol=1e-5,
                             atol=1e-6)


def test_weighted_loss_of_the_optimal_denoiser_is_one_at_every_sigma():
  """Data ~ N(0, σ_data²): the optimal D is c_skip·x (F = 0) and its weighted loss is 1 at any σ."""
  sigma_data = 0.5
  target = sigma_data * jax.random.normal(jax.random.key(0), (512, 32, 8))
  cond = jnp.zeros_like(target)
  for sigma in (0.2, 0.5, 1.0, 5.0):
    loss = edm.val_loss_at_sigma(_zero_model, target, cond, sigma, jax.random.key(1), True,
                                 sigma_data=sigma_data)
    assert abs(float(loss) - 1.0) < 0.02, (sigma, float(loss))
    worse = edm.val_loss_at_sigma(lambda x, *a: 0.3 * jnp.ones_like(x), target, cond, sigma,
                                  jax.random.key(1), True, sigma_data=sigma_data)
    assert float(worse) > float(loss) + 0.05


def test_training_noise_levels_are_log_normal():
  sigma = edm.sample_sigma(jax.random.key(0), (200_000,), -1.2, 1.2)
  assert bool(jnp.all(sigma > 0))
  assert abs(float(jnp.mean(jnp.log(sigma))) + 1.2) < 0.01
  assert abs(float(jnp.std(jnp.log(sigma))) - 1.2) < 0.01


def test_conditioning_dropout_uses_the_null_condition_with_p_uncond():
  target = jax.random.normal(jax.random.key(0), (4096, 4, 2))
  cond_a = jax.random.normal(jax.random.key(1), target.shape)
  cond_b = jax.random.normal(jax.random.key(2), target.shape)
  key = jax.random.key(3)
  # Always dropped: the condition cannot change the loss.
  la, aux = edm.denoising_loss(_cond_model, target, cond_a, key, _dcfg(p_uncond=1.0))
  lb, _ = edm.denoising_loss(_cond_model, target, cond_b, key, _dcfg(p_uncond=1.0))
  assert float(aux["cond_fraction"]) == 0.0 and float(la) == float(lb)
  # Never dropped: it does.
  la, aux = edm.denoising_loss(_cond_model, target, cond_a, key, _dcfg(p_uncond=0.0))
  lb, _ = edm.denoising_loss(_cond_model, target, cond_b, key, _dcfg(p_uncond=0.0))
  assert float(aux["cond_fraction"]) == 1.0 and abs(float(la) - float(lb)) > 1e-3
  _, aux = edm.denoising_loss(_cond_model, target, cond_a, key, _dcfg(p_uncond=0.25))
  assert abs(float(aux["cond_fraction"]) - 0.75) < 0.03
  assert set(aux) >= {"loss", "mse", "cond_fraction", "loss_low_sigma", "loss_high_sigma"}


def test_val_loss_passes_the_requested_condition():
  masks = []

  def model(x, sigma, cond, cond_mask):
    masks.append(cond_mask)
    return jnp.zeros_like(x)

  target = jnp.ones((2, 4, 3))
  for use_cond in (True, False):
    edm.val_loss_at_sigma(model, target, target, 0.5, jax.random.key(0), use_cond, sigma_data=1.0)
  np.testing.assert_array_equal(masks[0], [1.0, 1.0])
  np.testing.assert_array_equal(masks[1], [0.0, 0.0])


def test_unet_learns_to_use_the_mix():
  """A few steps on 'the bass is a function of the mix' make the conditional loss beat the null."""
  config = _config("runlocal")
  model = unet.UNet1D(unet.UNetConfig.from_config(config.model), rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
  dcfg = config.diffusion
  c = config.model.latent_channels
  cond = jax.random.normal(jax.random.key(0), (16, 32, unet.cond_channels(config.model)))
  target = jnp.flip(cond[..., :c], axis=-1)

  @nnx.jit
  def step(model, opt, key):
    def loss_fn(m):
      return edm.denoising_loss(m, target, cond, key, dcfg)
    (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    opt.update(model, grads)
    return loss

  @nnx.jit
  def val(model, use_cond):
    return edm.val_loss_at_sigma(model, target, cond, 1.0, jax.random.key(7), use_cond,
                                 sigma_data=dcfg.sigma_data)

  before = float(val(model, True))
  for i in range(60):
    step(model, opt, jax.random.key(i))
  after_cond, after_null = float(val(model, True)), float(val(model, False))
  assert np.isfinite(after_cond)
  assert after_cond < 0.6 * before
  assert after_cond < 0.7 * after_null
