"""Jitted samplers for the latent diffusion model (DESIGN.md §2): Euler, Heun and DPM-Solver++(2M)
on the Karras σ schedule, classifier-free guidance with the std rescale φ, style grounding, a
RePaint-style inpainting hook and length buckets.

`denoise_fn(x_BxTxC, sigma_B, cond_BxTxC, cond_mask_B[, frame_mask_BxT=...]) -> D_BxTxC` is the
preconditioned denoiser (`edm.precondition` around the U-Net). The whole loop runs inside one
`jax.jit` (`lax.fori_loop`); the conditional and null-condition passes run as one batch of 2B.

Typical use (the CLI does this):
  model.eval(); graphdef, state = nnx.split(model)
  sample_fn = make_sampler(graphdef, sigma_data=cfg.diffusion.sigma_data,
                           sampler=cfg.sample.sampler, steps=cfg.sample.steps)
  z_BxTxC = generate(sample_fn, state, mix_BxTxC, cfg=cfg.sample,
                     length_multiple=unet.length_multiple(cfg.model), style=style_stats(ref_1xTxC))
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bassgen import sharding
from bassgen.diffusion import edm
from bassgen.errors import BassgenError

SAMPLERS = ("euler", "heun", "dpmpp2m")
# Sampler settings passed as traced scalars: changing them never recompiles.
KNOBS = ("sigma_min", "sigma_max", "rho", "guidance_w", "rescale_phi", "ground_strength",
         "ground_sigma_threshold", "harmony_switch_penalty", "onset_threshold")
# Knobs that configs written before they existed lack.
_KNOB_DEFAULTS = {"harmony_switch_penalty": 0.0, "onset_threshold": 0.5}
_EPS = 1e-12

DenoiseFn = Callable[..., jax.Array]

# With a progress bar, a sampling run is split into at most this many calls (each call costs a
# dispatch of the whole model state, tens of ms on a CPU, so one call per step would add seconds).
PROGRESS_CALLS = 8


@contextlib.contextmanager
def progress_bar(total: int, desc: str) -> Iterator[Any]:
  """A tqdm bar (steps and ETA, on stderr) to pass as the `progress` of a `make_sampler` function
  or of `generate`, which count their steps on it."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  bar = tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)
  try:
    yield bar
  finally:
    bar.close()


def karras_sigmas(steps: int, sigma_min: Any, sigma_max: Any, rho: Any) -> jax.Array:
  """[steps + 1] noise levels from σ_max down to σ_min (Karras et al. eq. 5), then a final 0."""
  ramp = jnp.arange(steps, dtype=jnp.float32) / max(steps - 1, 1)
  inv_rho = 1.0 / jnp.asarray(rho, jnp.float32)
  lo = jnp.asarray(sigma_min, jnp.float32) ** inv_rho
  hi = jnp.asarray(sigma_max, jnp.float32) ** inv_rho
  sigmas = (hi + ramp * (lo - hi)) ** jnp.asarray(rho, jnp.float32)
  return jnp.concatenate([sigmas, jnp.zeros((1,), jnp.float32)])


def _moments(x: jax.Array, frame_mask_BxT: jax.Array | None, axes: tuple[int, ...]
             ) -> tuple[jax.Array, jax.Array]:
  """Mean and std of x over `axes` (kept as size-1 dims), counting only real frames."""
  if frame_mask_BxT is None:
    w = jnp.ones(x.shape[:2] + (1,), x.dtype)
  else:
    w = frame_mask_BxT.astype(x.dtype)[:, :, None]
  w = jnp.broadcast_to(w, x.shape)
  n = jnp.maximum(jnp.sum(w, axis=axes, keepdims=True), 1.0)
  mean = jnp.sum(w * x, axis=axes, keepdims=True) / n
  var = jnp.sum(w * jnp.square(x - mean), axis=axes, keepdims=True) / n
  return mean, jnp.sqrt(var)


def style_stats(z_BxTxC: jax.Array, frame_mask_BxT: jax.Array | None = None
                ) -> tuple[jax.Array, jax.Array]:
  """The "style" of a normalised reference latent: per-channel (mean_BxC, std_BxC) over time."""
  mean, std = _moments(z_BxTxC, frame_mask_BxT, (1,))
  return mean[:, 0], std[:, 0]


def guidance_combine(d_cond_BxTxC: jax.Array, d_uncond_BxTxC: jax.Array, guidance_w: Any,
                     rescale_phi: Any, frame_mask_BxT: jax.Array | None = None) -> jax.Array:
  """D = D_u + w (D_c - D_u); D_r = D · std(D_c) / std(D) per example; φ D_r + (1 - φ) D."""
  d = d_uncond_BxTxC + guidance_w * (d_cond_BxTxC - d_uncond_BxTxC)
  _, std_c = _moments(d_cond_BxTxC, frame_mask_BxT, (1, 2))
  _, std_d = _moments(d, frame_mask_BxT, (1, 2))
  d_rescaled = d * (std_c / jnp.maximum(std_d, _EPS))
  return rescale_phi * d_rescaled + (1.0 - rescale_phi) * d


def guided_denoiser(denoise_fn: DenoiseFn, *, guidance_w: Any, rescale_phi: Any) -> DenoiseFn:
  """`fn(x_BxTxC, sigma_B, cond_BxTxC, frame_mask_BxT=None) -> D_final`, one 2B-batch call."""

  def fn(x_BxTxC, sigma_B, cond_BxTxC, frame_mask_BxT=None):
    b = x_BxTxC.shape[0]
    two = lambda a: jnp.concatenate([a, a], axis=0)
    mask_2B = jnp.concatenate([jnp.ones((b,), jnp.float32), jnp.zeros((b,), jnp.float32)])
    kwargs = {} if frame_mask_BxT is None else {"frame_mask_BxT": two(frame_mask_BxT)}
    d_2BxTxC = denoise_fn(two(x_BxTxC), two(sigma_B), two(cond_BxTxC), mask_2B, **kwargs)
    return guidance_combine(d_2BxTxC[:b], d_2BxTxC[b:], guidance_w, rescale_phi, frame_mask_BxT)

  return fn


def ground(d_BxTxC: jax.Array, style_mean_BxC: jax.Array, style_std_BxC: jax.Array,
           strength: Any, frame_mask_BxT: jax.Array | None = None) -> jax.Array:
  """Style grounding: renormalise each channel over time to the reference's mean and std, then
  blend with the estimate: D + λ (D_renormalised - D)."""
  mean, std = _moments(d_BxTxC, frame_mask_BxT, (1,))
  renorm = ((d_BxTxC - mean) / jnp.maximum(std, _EPS) * style_std_BxC[:, None]
            + style_mean_BxC[:, None])
  return d_BxTxC + strength * (renorm - d_BxTxC)


def check_sampler(sampler: str, steps: int) -> None:
  if sampler not in SAMPLERS:
    raise BassgenError(f"sample.sampler is {sampler!r}; choose one of {SAMPLERS} "
                       "(configs/ldm.py or --config.sample.sampler=dpmpp2m)")
  if int(steps) < 1:
    raise BassgenError(f"sample.steps is {steps}; it must be at least 1 (configs/ldm.py)")


def sample(denoise_fn: DenoiseFn, cond_BxTxC: jax.Array, key: jax.Array, *, cfg: Mapping,
           style_mean_BxC: jax.Array | None = None, style_std_BxC: jax.Array | None = None,
           known_BxTxC: jax.Array | None = None, known_mask_BxT: jax.Array | None = None,
           frame_mask_BxT: jax.Array | None = None, latent_channels: int | None = None,
           segment: tuple[jax.Array, jax.Array, Any, Any] | None = None) -> Any:
  """Draws target latents for the condition `cond_BxTxC` (the mix latents, plus any extra
  condition channels: then give the target's `latent_channels`); jit-friendly.

  `cfg` maps 'sampler' and 'steps' (Python values) and the KNOBS (Python or traced scalars).
  Style grounding runs while σ > ground_sigma_threshold if style stats are given. With
  `known_BxTxC` and `known_mask_BxT` (1 = keep), after every step the known frames are replaced by
  the known latent noised to the new σ, so the output reproduces them exactly.

  `segment=(x_BxTxC, d_prev_BxTxC, start, stop)` runs only steps [start, stop) (Python or traced
  integers, 0 <= start <= stop <= steps) from the state (x, d_prev) that the previous segment
  returned, and returns the new (x, d_prev); at start = 0 the given state is ignored and the
  loop starts from noise. Running [0, steps) in any number of segments gives the same latents as
  one call without `segment`: this is how a progress bar follows a jitted sampler without a host
  callback inside it (which would keep the program out of the persistent compilation cache).
  """
  sampler, steps = cfg["sampler"], int(cfg["steps"])
  check_sampler(sampler, steps)
  if (style_mean_BxC is None) != (style_std_BxC is None):
    raise ValueError("give both style_mean_BxC and style_std_BxC, or neither")
  if (known_BxTxC is None) != (known_mask_BxT is None):
    raise ValueError("give both known_BxTxC and known_mask_BxT, or neither")
  b = cond_BxTxC.shape[0]
  sigmas = karras_sigmas(steps, cfg["sigma_min"], cfg["sigma_max"], cfg["rho"])
  guided = guided_denoiser(denoise_fn, guidance_w=cfg["guidance_w"],
                           rescale_phi=cfg["rescale_phi"])

  def denoise(x, sigma):
    d = guided(x, jnp.full((b,), sigma), cond_BxTxC, frame_mask_BxT)
    if style_mean_BxC is not None:
      grounded = ground(d, style_mean_BxC, style_std_BxC, cfg["ground_strength"], frame_mask_BxT)
      d = jnp.where(sigma > cfg["ground_sigma_threshold"], grounded, d)
    return d

  def paste_known(x, sigma, k):
    if known_BxTxC is None:
      return x
    noisy = known_BxTxC + sigma * jax.random.normal(k, x.shape, x.dtype)
    return jnp.where(known_mask_BxT[:, :, None] > 0, noisy, x)

  def body(i, carry):
    x, d_prev = carry
    s, s_next = sigmas[i], sigmas[i + 1]
    d = denoise(x, s)

    def step():
      if sampler == "euler":
        return x + (s_next - s) * (x - d) / s
      if sampler == "heun":
        slope = (x - d) / s
        x_euler = x + (s_next - s) * slope
        slope_next = (x_euler - denoise(x_euler, s_next)) / s_next
        return x + (s_next - s) * 0.5 * (slope + slope_next)
      # DPM-Solver++(2M) in t = -log σ; first-order on the first step.
      h = jnp.log(s) - jnp.log(s_next)
      h_last = jnp.log(sigmas[jnp.maximum(i - 1, 0)]) - jnp.log(s)
      r = jnp.where(i > 0, h_last / h, 1.0)
      c = jnp.where(i > 0, 0.5 / r, 0.0)
      return (s_next / s) * x - jnp.expm1(-h) * ((1.0 + c) * d - c * d_prev)

    # The last step goes to σ = 0, where every sampler returns the denoised estimate.
    x_next = jax.lax.cond(i == steps - 1, lambda: d, step)
    return paste_known(x_next, s_next, jax.random.fold_in(k_paste, i)), d

  k_init, k_paste = jax.random.split(key)
  shape = cond_BxTxC.shape[:2] + (latent_channels or cond_BxTxC.shape[2],)
  x0 = jax.random.normal(k_init, shape, jnp.float32) * sigmas[0]
  x0 = paste_known(x0, sigmas[0], jax.random.fold_in(k_paste, steps))
  if segment is None:
    x, _ = jax.lax.fori_loop(0, steps, body, (x0, jnp.zeros_like(x0)))
    return x
  x, d_prev, start, stop = segment
  x = jnp.where(start == 0, x0, x)
  return jax.lax.fori_loop(start, stop, body, (x, d_prev))


def sampler_knobs(cfg: Mapping) -> dict[str, np.ndarray]:
  """The traced settings of a `sample` config section, as float32 scalars."""
  return {name: np.asarray(cfg[name] if name in cfg else _KNOB_DEFAULTS[name], np.float32)
          for name in KNOBS}


def model_denoiser(model_graphdef: Any, state: Any, sigma_data: float
                   ) -> tuple[DenoiseFn, Any]:
  """(denoise_fn, model): the preconditioned denoiser of the U-Net in `state` (eval mode).

  `state` is the NNX state of `nnx.split(model)`, or the tuple of states of a filtered split.
  Call it inside the jitted function.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top
  states = state if isinstance(state, tuple) else (state,)
  model = nnx.merge(model_graphdef, *states)
  model.eval()

  def denoise_fn(x, sigma, cond, cond_mask, frame_mask_BxT=None):
    return edm.precondition(model, x, sigma, cond, cond_mask, sigma_data, frame_mask_BxT)

  return denoise_fn, model


def complete_condition(model: Any, cond_BxTxC: jax.Array, knobs: Mapping) -> jax.Array:
  """The condition the U-Net reads: with a harmony head, the mix latent and chroma followed by
  the head's pitch-class path (`UNet1D.complete_condition`); otherwise unchanged. A condition
  that already has every channel (a given pitch-class path, e.g. an oracle control) is used as
  it is."""
  if getattr(model, "harmony", None) is None or cond_BxTxC.shape[-1] == model.cond_channels:
    return cond_BxTxC
  return model.complete_condition(cond_BxTxC, knobs["harmony_switch_penalty"],
                                  knobs["onset_threshold"])


def make_sampler(model_graphdef: Any, *, sigma_data: float, sampler: str, steps: int,
                 programs: Any = None, scope: str = "",
                 channels: tuple[int, int] | None = None) -> Callable[..., jax.Array]:
  """`fn(state, cond_BxTxC, key, knobs, style_mean_BxC=None, style_std_BxC=None,
  known_BxTxC=None, known_mask_BxT=None, frame_mask_BxT=None, progress=None) -> z_BxTxC`, one
  jitted program.

  `state` is the NNX state of `nnx.split(model)` (model weights or their EMA), or the tuple of
  states of a filtered split such as `nnx.split(model, nnx.Param, ...)` (plain dicts work too);
  `knobs` is `sampler_knobs(cfg.sample)`. Calls with the same shapes (and the same set of
  optional inputs) reuse one compilation whatever the weights, key or knob values. With
  `progress` (anything with tqdm's `update(n)`, e.g. a `progress_bar`), the program runs a few
  steps per call (at most PROGRESS_CALLS calls; `sample`'s segments: the same program, the same
  latents) and reports them to it; otherwise all steps run in one call.

  `programs` (a `bassgen.aot.ProgramCache`) keeps the compiled program between processes;
  `scope` must then identify the model (`aot.config_scope` of its config). `model_graphdef` may
  then be a function that returns the graphdef, called only if the program is traced, and
  `channels` (the U-Net's latent and condition channels) spares the one host-side merge that
  reads them from the model: a process whose program comes from the cache never builds the
  model's structure.
  """
  check_sampler(sampler, steps)
  graphdef_of = model_graphdef if callable(model_graphdef) else lambda: model_graphdef

  def run(state, cond_BxTxC, key, knobs, style_mean_BxC, style_std_BxC, known_BxTxC,
          known_mask_BxT, frame_mask_BxT, carry):
    x, d_prev, full_cond, start, stop = carry
    denoise_fn, model = model_denoiser(graphdef_of(), state, sigma_data)
    # The harmony head's path is decoded once, in the first segment, and carried along.
    full_cond = jax.lax.cond(start == 0, lambda: complete_condition(model, cond_BxTxC, knobs),
                             lambda: full_cond)
    x, d_prev = sample(denoise_fn, full_cond, key, cfg=dict(knobs, sampler=sampler, steps=steps),
                       style_mean_BxC=style_mean_BxC, style_std_BxC=style_std_BxC,
                       known_BxTxC=known_BxTxC, known_mask_BxT=known_mask_BxT,
                       frame_mask_BxT=frame_mask_BxT, latent_channels=model.latent_channels,
                       segment=(x, d_prev, start, stop))
    return x, d_prev, full_cond

  run_jit = jax.jit(run)
  if programs is not None:
    run_jit = functools.partial(programs.call, f"sampler/{sampler}/{steps}", scope, run_jit)
  channels = {} if channels is None else dict(latent=channels[0], cond=channels[1])

  def fn(state, cond_BxTxC, key, knobs, style_mean_BxC=None, style_std_BxC=None,
         known_BxTxC=None, known_mask_BxT=None, frame_mask_BxT=None, progress=None):
    if not channels:   # the module's attributes, read once from a host-side merge (no compute)
      _, model = model_denoiser(graphdef_of(), state, sigma_data)
      channels.update(latent=model.latent_channels, cond=model.cond_channels)
    b, t = cond_BxTxC.shape[:2]
    # Host zeros for the first segment's (ignored) state: no per-shape eager op to compile.
    x = d_prev = np.zeros((b, t, channels["latent"]), np.float32)
    full = np.zeros((b, t, channels["cond"]), np.float32)
    ticking = progress is not None
    every = max(1, -(-steps // PROGRESS_CALLS)) if ticking else steps
    bounds = list(range(0, steps, every)) + [steps]
    for start, stop in zip(bounds[:-1], bounds[1:]):
      x, d_prev, full = run_jit(state, cond_BxTxC, key, knobs, style_mean_BxC, style_std_BxC,
                                known_BxTxC, known_mask_BxT, frame_mask_BxT,
                                (x, d_prev, full, np.int32(start), np.int32(stop)))
      if ticking:
        # Back to host arrays (a few MB at most): the next call then sees the same argument
        # types as the first, so the program is traced and looked up once, not twice.
        x, d_prev, full = np.asarray(x), np.asarray(d_prev), np.asarray(full)
        progress.update(stop - start)
    return x

  return fn


def bucket_length(length: int, multiple: int, buckets: Sequence[int] = ()) -> int:
  """The padded length for `length` frames: the smallest bucket that holds it; past the last
  bucket (or with none), `length` rounded up to a multiple of `multiple`."""
  if length < 1:
    raise BassgenError(f"cannot generate for {length} latent frames: the mix is empty")
  fitting = [b for b in buckets if b >= length]
  if fitting:
    return min(fitting)
  return -(-length // multiple) * multiple


def generate(sample_fn: Callable[..., jax.Array], state: Any, cond_BxTxC: jax.Array, *,
             cfg: Any, length_multiple: int, key: jax.Array | None = None,
             style: tuple[jax.Array, jax.Array] | None = None,
             known_BxTxC: jax.Array | None = None,
             known_mask_BxT: jax.Array | None = None,
             mesh: jax.sharding.Mesh | None = None, progress: Any = None) -> np.ndarray:
  """Any-length generation: pads the mix to a length bucket, samples, crops back (on the host:
  the result is a numpy array). With `mesh`, the inputs are laid out on it: split over its
  devices where the batch divides, else replicated.

  `sample_fn` comes from `make_sampler`; `progress` (e.g. a `progress_bar`) counts its steps;
  `cfg` is the `sample` section (knobs, buckets,
  bucket_multiple, seed: used when `key` is None); `length_multiple` is
  `unet.length_multiple(cfg.model)`; `style` is `style_stats(reference_latent)` or None. Padded
  frames are masked out of attention, norms and the guidance/grounding statistics.
  """
  bad = [b for b in cfg.buckets if b % length_multiple]
  if bad or cfg.bucket_multiple % length_multiple:
    raise BassgenError(f"sample.buckets {tuple(cfg.buckets)} and sample.bucket_multiple "
                       f"{cfg.bucket_multiple} must be multiples of {length_multiple} (2 ** the "
                       "U-Net's downsamplings); fix them in configs/ldm.py")
  b, t, _ = cond_BxTxC.shape
  padded = bucket_length(t, cfg.bucket_multiple, cfg.buckets)
  pad = padded - t

  # Padding runs on the host (numpy): eager jax ops would compile once per song length.
  def pad_time(a, mode="constant"):
    widths = [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(np.asarray(a, np.float32), widths, mode=mode)

  frame_mask_BxT = pad_time(np.ones((b, t), np.float32))
  known = None if known_BxTxC is None else pad_time(known_BxTxC)
  known_mask = None if known_mask_BxT is None else pad_time(known_mask_BxT)
  key = jax.random.key(cfg.seed) if key is None else key
  style_mean, style_std = (None, None) if style is None else style
  # The mix continues into the padding as its mirror image (in-distribution for the convs).
  cond = pad_time(cond_BxTxC, "reflect" if t > 1 else "edge")
  inputs = (cond, style_mean, style_std, known, known_mask, frame_mask_BxT)
  if mesh is not None:
    inputs = tuple(None if a is None else jax.device_put(a, sharding.batch_or_replicated(mesh, a))
                   for a in inputs)
  cond, style_mean, style_std, known, known_mask, frame_mask_BxT = inputs
  z = sample_fn(state, cond, key,
                sampler_knobs(cfg), style_mean, style_std, known, known_mask, frame_mask_BxT,
                progress=progress)
  return np.asarray(z)[:, :t]


__all__ = ["SAMPLERS", "KNOBS", "progress_bar", "model_denoiser", "complete_condition", "karras_sigmas", "guidance_combine", "guided_denoiser", "ground",
           "style_stats", "sample", "sampler_knobs", "make_sampler", "bucket_length", "generate"]
