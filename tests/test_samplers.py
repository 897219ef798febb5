"""Samplers on a Gaussian problem with a closed-form denoiser; guidance; grounding; inpainting;
length buckets; one compilation per shape."""
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bassgen import samplers, sharding
from bassgen.config_loading import load_config
from bassgen.errors import BassgenError
from bassgen.models import unet

LDM_CONFIG = pathlib.Path(__file__).parents[1] / "configs" / "ldm.py"


def _unet(config, seed):
  return unet.UNet1D(unet.UNetConfig.from_config(config.model), rngs=nnx.Rngs(seed))


def _config(variant):
  return load_config(f"{LDM_CONFIG}:{variant}")

# Data: z ~ N(mu, S²) per element, where mu is the mix latent (cond) when the condition is
# present and MU_NULL under the null condition. The optimal denoiser is known in closed form.
S = 0.5
MU_NULL = jnp.array([0.2, -0.3, 0.1, 0.0])
MU_COND = jnp.array([1.0, 2.0, -1.5, 0.5])


def gaussian_denoiser(x, sigma, cond, cond_mask):
  mu = jnp.where(cond_mask[:, None, None] > 0, cond, MU_NULL)
  s2 = jnp.square(sigma)[:, None, None]
  return (S * S * x + s2 * mu) / (S * S + s2)


def _cfg(**overrides):
  cfg = dict(sampler="heun", steps=32, sigma_min=0.002, sigma_max=80.0, rho=7.0, guidance_w=1.0,
             rescale_phi=0.0, ground_strength=0.0, ground_sigma_threshold=0.0)
  cfg.update(overrides)
  return cfg


def _run(cfg, cond, key=0, **kwargs):
  fn = jax.jit(lambda c, k, kw: samplers.sample(gaussian_denoiser, c, k, cfg=cfg, **kw))
  return fn(cond, jax.random.key(key), kwargs)


def _copy_cfg(cfg, **overrides):
  out = cfg.copy_and_resolve_references()
  out.update(overrides)
  return out


def _cond(b=4096, t=8):
  return jnp.broadcast_to(MU_COND, (b, t, 4))


def test_karras_schedule():
  sig = samplers.karras_sigmas(32, 0.002, 80.0, 7.0)
  assert sig.shape == (33,)
  np.testing.assert_allclose([sig[0], sig[31], sig[32]], [80.0, 0.002, 0.0], rtol=1e-5)
  assert bool(jnp.all(jnp.diff(sig) < 0))


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
@pytest.mark.parametrize("w", [1.0, 2.5])
def test_samples_match_the_target_distribution(sampler, w):
  # With shared S, guidance w moves the target mean to MU_NULL + w (MU_COND - MU_NULL).
  target_mean = MU_NULL + w * (MU_COND - MU_NULL)
  # Euler is first order: on the Karras schedule (32 steps, rho 7) a *correct* Euler ends with
  # the std 8.8% low on this problem (any S from 0.25 to 2 gives 7-10%; `_euler_std` is the exact
  # value of its discrete recursion), so its std is checked against that value at 32 steps and
  # against S at 128 steps; its mean is checked at 32. Heun and DPM++ are within 2% at 32.
  z = _run(_cfg(sampler=sampler, guidance_w=w), _cond())
  mean, std = z.mean(axis=(0, 1)), z.std(axis=(0, 1))
  np.testing.assert_array_less(jnp.abs(mean - target_mean), 0.03 * jnp.abs(target_mean))
  if sampler == "euler":
    np.testing.assert_array_less(jnp.abs(std / _euler_std(32) - 1), 0.01)
    assert abs(_euler_std(32) / S - 1) > 0.05
    z = _run(_cfg(sampler=sampler, guidance_w=w, steps=128), _cond())
    std = z.std(axis=(0, 1))  # the first-order error shrinks with more steps
  np.testing.assert_array_less(jnp.abs(std / S - 1), 0.03)


def _euler_std(steps):
  """Final std of exact-arithmetic Euler on this problem: x - mu scales by 1 + (s' - s) s / (S² + s²)
  per step from s to s' (the guided denoiser's slope in x does not depend on w)."""
  sig = np.asarray(samplers.karras_sigmas(steps, 0.002, 80.0, 7.0), np.float64)
  std = sig[0]
  for a, b in zip(sig[:-1], sig[1:]):
    std *= 1 + (b - a) * a / (S * S + a * a)
  return std


def test_convergence_order_on_one_trajectory():
  """Error against the exact ODE solution halves (Euler) or quarters (Heun, DPM++) per doubling."""
  x_t = jax.random.normal(jax.random.split(jax.random.key(0))[0], (1, 1, 4)) * 80.0
  null = jnp.zeros((1, 1, 4))

  def denoise_zero_mean(x, sigma, cond, cond_mask):
    return S * S * x / (S * S + jnp.square(sigma)[:, None, None])

  exact = x_t * S / jnp.sqrt(80.0 ** 2 + S * S)
  for sampler, ratio in (("euler", 2.0), ("heun", 4.0), ("dpmpp2m", 4.0)):
    errs = []
    for steps in (32, 64):
      z = samplers.sample(denoise_zero_mean, null, jax.random.key(0),
                          cfg=_cfg(sampler=sampler, steps=steps))
      errs.append(float(jnp.abs(z - exact).max()))
    assert 0.75 * ratio < errs[0] / errs[1] < 1.3 * ratio, (sampler, errs)


def test_guidance_identities():
  k1, k2 = jax.random.split(jax.random.key(0))
  d_c = jax.random.normal(k1, (3, 16, 4)) * jnp.array([1.0, 2.0, 0.5])[:, None, None]
  d_u = 0.3 * jax.random.normal(k2, (3, 16, 4))
  # w = 1: the conditional estimate, whatever φ.
  for phi in (0.0, 0.7, 1.0):
    np.testing.assert_allclose(samplers.guidance_combine(d_c, d_u, 1.0, phi), d_c, rtol=1e-5,
                               atol=1e-6)
  # φ = 1: exactly the std of the conditional estimate, per example.
  guided = samplers.guidance_combine(d_c, d_u, 4.0, 1.0)
  np.testing.assert_allclose(guided.std(axis=(1, 2)), d_c.std(axis=(1, 2)), rtol=1e-5)
  # φ = 0: plain classifier-free guidance.
  np.testing.assert_allclose(samplers.guidance_combine(d_c, d_u, 4.0, 0.0),
                             d_u + 4.0 * (d_c - d_u), rtol=1e-6)


def test_guided_denoiser_runs_both_passes_as_one_batch():
  calls = []

  def denoise(x, sigma, cond, cond_mask):
    calls.append((x.shape, cond_mask))
    return gaussian_denoiser(x, sigma, cond, cond_mask)

  fn = samplers.guided_denoiser(denoise, guidance_w=3.0, rescale_phi=0.0)
  x = jax.random.normal(jax.random.key(0), (2, 8, 4))
  out = fn(x, jnp.full((2,), 0.7), _cond(2))
  assert len(calls) == 1 and calls[0][0] == (4, 8, 4)
  np.testing.assert_array_equal(calls[0][1], [1.0, 1.0, 0.0, 0.0])
  d_c = gaussian_denoiser(x, jnp.full((2,), 0.7), _cond(2), jnp.ones(2))
  d_u = gaussian_denoiser(x, jnp.full((2,), 0.7), _cond(2), jnp.zeros(2))
  np.testing.assert_allclose(out, d_u + 3.0 * (d_c - d_u), rtol=1e-5, atol=1e-6)


def test_grounding_matches_the_reference_statistics():
  ref = 0.7 * jax.random.normal(jax.random.key(5), (4, 40, 4)) + jnp.array([0.5, -1.0, 2.0, 0.0])
  style_mean, style_std = samplers.style_stats(ref)
  z = _run(_cfg(sampler="dpmpp2m", ground_strength=1.0, ground_sigma_threshold=0.0), _cond(4, 64),
           style_mean_BxC=style_mean, style_std_BxC=style_std)
  z_mean, z_std = samplers.style_stats(z)
  np.testing.assert_allclose(z_mean, style_mean, atol=1e-3)
  np.testing.assert_allclose(z_std, style_std, atol=1e-3)
  # λ blends: half strength lands half way in a single grounding step.
  d = jax.random.normal(jax.random.key(1), (4, 64, 4))
  half = samplers.ground(d, style_mean, style_std, 0.5)
  np.testing.assert_allclose(half, 0.5 * (d + samplers.ground(d, style_mean, style_std, 1.0)),
                             rtol=1e-5, atol=1e-6)


def test_without_a_reference_grounding_changes_nothing():
  cond = _cond(4, 16)
  style = samplers.style_stats(jax.random.normal(jax.random.key(5), (4, 16, 4)))
  plain = _run(_cfg(ground_strength=0.0), cond)
  no_ref = _run(_cfg(ground_strength=1.0), cond)
  zero_strength = _run(_cfg(ground_strength=0.0), cond, style_mean_BxC=style[0],
                       style_std_BxC=style[1])
  above_threshold = _run(_cfg(ground_strength=1.0, ground_sigma_threshold=100.0), cond,
                         style_mean_BxC=style[0], style_std_BxC=style[1])
  grounded = _run(_cfg(ground_strength=1.0), cond, style_mean_BxC=style[0],
                  style_std_BxC=style[1])
  np.testing.assert_array_equal(no_ref, plain)
  np.testing.assert_array_equal(zero_strength, plain)
  np.testing.assert_array_equal(above_threshold, plain)
  assert float(jnp.abs(grounded - plain).max()) > 0.1


def test_inpainting_keeps_the_known_region():
  cond = _cond(1024, 32)
  known = jax.random.normal(jax.random.key(3), cond.shape)
  mask = jnp.zeros((1024, 32)).at[:, :12].set(1.0)
  z = _run(_cfg(sampler="dpmpp2m"), cond, known_BxTxC=known, known_mask_BxT=mask)
  np.testing.assert_array_equal(z[:, :12], known[:, :12])
  free = z[:, 12:]
  np.testing.assert_array_less(jnp.abs(free.mean(axis=(0, 1)) - MU_COND), 0.03 * jnp.abs(MU_COND))
  np.testing.assert_array_less(jnp.abs(free.std(axis=(0, 1)) / S - 1), 0.03)


def test_bucket_length():
  buckets = (16, 32, 64)
  assert samplers.bucket_length(1, 32, buckets) == 16
  assert samplers.bucket_length(16, 32, buckets) == 16
  assert samplers.bucket_length(17, 32, buckets) == 32
  assert samplers.bucket_length(65, 32, buckets) == 96
  assert samplers.bucket_length(100, 64) == 128
  with pytest.raises(BassgenError):
    samplers.bucket_length(0, 32, buckets)


def test_unknown_sampler_is_a_clear_error():
  with pytest.raises(BassgenError, match="sample.sampler"):
    samplers.sample(gaussian_denoiser, _cond(1), jax.random.key(0), cfg=_cfg(sampler="ddim"))


def test_sampler_accepts_split_states_and_reproduces_a_seed():
  config = _config("runlocal")
  model = _unet(config, 0)
  model.conv_out.kernel[...] = 0.1 * jnp.ones_like(model.conv_out.kernel[...])  # F != 0
  graphdef, state = nnx.split(model)
  graphdef3, params, rest = nnx.split(model, nnx.Param, ...)
  mix = jax.random.normal(jax.random.key(0), (1, 24, unet.sampling_cond_channels(config.model)))
  run = lambda g, s, seed: samplers.generate(
      samplers.make_sampler(g, sigma_data=1.0, sampler="euler", steps=3), s, mix,
      cfg=_copy_cfg(config.sample, seed=seed), length_multiple=unet.length_multiple(config.model))
  z = run(graphdef, state, 0)
  np.testing.assert_allclose(run(graphdef3, (nnx.to_pure_dict(params), rest), 0), z, atol=1e-6)
  assert float(jnp.abs(run(graphdef, state, 1) - z).max()) > 1e-2


def test_jitted_sampler_compiles_once_per_bucket(monkeypatch):
  config = _config("runlocal")
  graphdef, state = nnx.split(_unet(config, 0))
  _, state2 = nnx.split(_unet(config, 1))
  chex.clear_trace_counter()
  monkeypatch.setattr(samplers, "sample", chex.assert_max_traces(samplers.sample, n=1))
  sample_fn = samplers.make_sampler(graphdef, sigma_data=config.diffusion.sigma_data,
                                    sampler="heun", steps=4)
  scfg = config.sample
  multiple = unet.length_multiple(config.model)
  c = unet.sampling_cond_channels(config.model)
  mix_a = jax.random.normal(jax.random.key(0), (2, 20, c))
  mix_b = jax.random.normal(jax.random.key(1), (2, 27, c))  # same bucket (32), other length
  z_a = samplers.generate(sample_fn, state, mix_a, cfg=scfg, length_multiple=multiple)
  # Other weights, knob values, seed and length in the same bucket: no new trace.
  scfg2 = _copy_cfg(scfg, guidance_w=3.0, rescale_phi=0.0, seed=1)
  z_b = samplers.generate(sample_fn, state2, mix_b, cfg=scfg2, length_multiple=multiple)
  z_a2 = samplers.generate(sample_fn, state, mix_a, cfg=scfg, length_multiple=multiple)
  assert z_a.shape == (2, 20, config.model.latent_channels)
  assert z_b.shape == (2, 27, config.model.latent_channels)
  assert bool(jnp.all(jnp.isfinite(z_a))) and bool(jnp.all(jnp.isfinite(z_b)))
  np.testing.assert_array_equal(z_a, z_a2)  # a seed reproduces its sample
  # A new bucket is a new shape: it must trace again (which the assertion reports).
  with pytest.raises(AssertionError, match="traced > 1"):
    samplers.generate(sample_fn, state, jnp.zeros((2, 40, c)), cfg=scfg, length_multiple=multiple)


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_sampling_in_segments_gives_the_same_latents(sampler):
  """A progress bar runs the sampler one step per call: the same latents as one call."""
  cond = _cond(b=2)
  cfg = _cfg(sampler=sampler, steps=6, guidance_w=2.0)
  whole = _run(cfg, cond, key=3)
  seg = jax.jit(lambda c, k, x, d, a, b: samplers.sample(
      gaussian_denoiser, c, k, cfg=cfg, segment=(x, d, a, b)))
  x = d = jnp.zeros_like(cond)
  for start, stop in ((0, 1), (1, 4), (4, 6)):
    x, d = seg(cond, jax.random.key(3), x, d, start, stop)
  np.testing.assert_allclose(x, whole, rtol=1e-5, atol=1e-5)


def test_progress_bar_ticks_once_per_step_and_changes_nothing(monkeypatch):
  """A few steps per call when given a bar: the same latents, and the same one traced program
  as without the bar (the per-step calls pass the same argument types as the first)."""
  config = _config("runlocal")
  graphdef, state = nnx.split(_unet(config, 0))
  # Committed on a one-device mesh, as BassGenerator places its weights.
  one_device = sharding.make_mesh((1, 1), devices=jax.devices()[:1])
  state = jax.device_put(state, sharding.replicated(one_device))
  chex.clear_trace_counter()
  monkeypatch.setattr(samplers, "sample", chex.assert_max_traces(samplers.sample, n=1))
  sample_fn = samplers.make_sampler(graphdef, sigma_data=config.diffusion.sigma_data,
                                    sampler="dpmpp2m", steps=5)
  mix = jax.random.normal(jax.random.key(0), (1, 20, unet.sampling_cond_channels(config.model)))
  run = lambda progress=None: samplers.generate(
      sample_fn, state, mix, cfg=config.sample, length_multiple=unet.length_multiple(config.model),
      progress=progress)
  quiet = run()
  with samplers.progress_bar(5, "steps") as bar:
    ticked = run(bar)
  assert bar.n == 5
  np.testing.assert_allclose(ticked, quiet, rtol=1e-5, atol=1e-5)
