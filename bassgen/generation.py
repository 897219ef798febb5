"""Mix in, bass out: the trained autoencoder and diffusion model behind one object.

    gen = BassGenerator.load("experiments/demo")
    basses = gen.generate(mix_wav, sample_rate, style_wav=None, num_samples=1)

The mix is resampled to the model's rate, encoded and normalised; the diffusion sampler (one
jitted function per length bucket: a new song length rarely compiles again) draws bass latents
with guidance, rescale and optional style grounding; the decoder returns audio at the input's rate
and length. Regenerating a region keeps a given bass outside it (latent inpainting).
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bassgen import checkpointing, samplers
from bassgen.codec import Codec, find_export
from bassgen.data import audio
from bassgen.errors import BassgenError
from bassgen.models import unet


@dataclasses.dataclass
class SampleOptions:
  """The user's knobs; None means the model config's default."""
  guidance: float | None = None
  rescale: float | None = None
  ground_strength: float | None = None
  steps: int | None = None
  sampler: str | None = None
  seed: int = 0
  num_samples: int = 1


class BassGenerator:

  def __init__(self, codec: Codec, cfg: ml_collections.ConfigDict, params: Any):
    self.codec = codec
    self.cfg = cfg
    # Graph and non-parameter state (dropout streams, unused at inference) of a fresh module.
    self.graphdef, _, self.rest = nnx.split(unet.UNet1D(cfg.model, rngs=nnx.Rngs(0)), nnx.Param,
                                            ...)
    self.params = jax.device_put(params)
    self.length_multiple = unet.length_multiple(cfg.model)
    self._samplers: dict[tuple[str, int], Any] = {}

  @classmethod
  def load(cls, path: str | pathlib.Path) -> "BassGenerator":
    """`path`: a bundle folder holding `autoencoder/` and `ldm/` (like experiments/demo), or a
    diffusion training workdir/export whose config names its autoencoder."""
    path = pathlib.Path(path)
    if not path.exists():
      raise BassgenError(f"{path}: no such checkpoint folder. Give the bundled experiments/demo "
                         "folder or a diffusion training workdir.")
    ldm_dir = find_export(path, "ldm")
    meta = checkpointing.load_meta(ldm_dir)
    if meta.get("kind") != "ldm":
      raise BassgenError(f"{ldm_dir}: not a diffusion model export (kind={meta.get('kind')!r}). "
                         "Give the bundled experiments/demo folder or a diffusion workdir.")
    cfg = ml_collections.ConfigDict(meta["config"])
    abstract = nnx.eval_shape(lambda: unet.UNet1D(cfg.model, rngs=nnx.Rngs(0)))
    params = checkpointing.load_params(
        ldm_dir, nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
    ae_dir = path / "autoencoder" if (path / "autoencoder").is_dir() else pathlib.Path(
        meta["autoencoder_checkpoint"])
    return cls(Codec.load(ae_dir), cfg, params)

  @property
  def sample_rate(self) -> int:
    return self.codec.sample_rate

  def _sample_cfg(self, opts: SampleOptions) -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict(self.cfg.sample.to_dict())
    for field, name in (("guidance", "guidance_w"), ("rescale", "rescale_phi"),
                        ("ground_strength", "ground_strength"), ("steps", "steps"),
                        ("sampler", "sampler")):
      value = getattr(opts, field)
      if value is not None:
        s[name] = value
    s.seed = opts.seed
    return s

  def _sampler(self, sampler: str, steps: int):
    key = (sampler, steps)
    if key not in self._samplers:
      self._samplers[key] = samplers.make_sampler(
          self.graphdef, sigma_data=self.cfg.diffusion.sigma_data, sampler=sampler, steps=steps)
    return self._samplers[key]

  def _full_state(self):
    model = nnx.merge(self.graphdef, self.params, self.rest)
    return nnx.state(model)

  def style_of(self, style_wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    z = self.codec.encode(audio.resample(style_wav, sample_rate, self.sample_rate))
    mean, std = samplers.style_stats(jnp.asarray(z)[None])
    return np.asarray(mean), np.asarray(std)

  def generate(self, mix_wav: np.ndarray, sample_rate: int, *, style_wav: np.ndarray | None = None,
               style_sample_rate: int | None = None, options: SampleOptions | None = None,
               keep_bass: np.ndarray | None = None, regenerate: tuple[float, float] | None = None
               ) -> list[np.ndarray]:
    """`num_samples` bass waveforms at `sample_rate`, each as long as `mix_wav`."""
    opts = options or SampleOptions()
    scfg = self._sample_cfg(opts)
    samplers._check_sampler(scfg.sampler, int(scfg.steps))  # pylint: disable=protected-access
    n = len(mix_wav)
    mix = audio.resample(mix_wav, sample_rate, self.sample_rate)
    z_mix = self.codec.encode(mix)
    k = max(1, int(opts.num_samples))
    cond = jnp.asarray(np.repeat(z_mix[None], k, axis=0))
    style = None
    if style_wav is not None:
      mean, std = self.style_of(style_wav, style_sample_rate or sample_rate)
      style = (jnp.repeat(jnp.asarray(mean), k, 0), jnp.repeat(jnp.asarray(std), k, 0))
    known = known_mask = None
    if regenerate is not None:
      if keep_bass is None:
        raise BassgenError("--regenerate needs --keep-bass BASS.wav (the bass to keep outside the "
                           "region)")
      z_keep = self.codec.encode(audio.resample(keep_bass, sample_rate, self.sample_rate)[: len(mix)])
      z_keep = np.pad(z_keep, ((0, max(0, z_mix.shape[0] - z_keep.shape[0])), (0, 0)))
      fps = self.sample_rate / self.codec.samples_per_latent
      start, end = regenerate
      frames = np.arange(z_mix.shape[0])
      mask = ~((frames >= int(np.floor(start * fps))) & (frames < int(np.ceil(end * fps))))
      known = jnp.asarray(np.repeat(z_keep[None, : z_mix.shape[0]], k, 0))
      known_mask = jnp.asarray(np.repeat(mask[None].astype(np.float32), k, 0))
    sample_fn = self._sampler(scfg.sampler, int(scfg.steps))
    z = samplers.generate(sample_fn, self._full_state(), cond, cfg=scfg,
                          length_multiple=self.length_multiple, key=jax.random.key(opts.seed),
                          style=style, known_BxTxC=known, known_mask_BxT=known_mask)
    z = np.asarray(z)
    outs = []
    for i in range(k):
      bass = self.codec.decode(z[i], len(mix))
      bass = audio.resample(bass, self.sample_rate, sample_rate)
      bass = np.pad(bass, (0, max(0, n - len(bass))))[:n]
      if regenerate is not None:
        bass = _crossfade_region(keep_bass[:n], bass, sample_rate, regenerate)
      outs.append(bass.astype(np.float32))
    return outs


def _crossfade_region(kept: np.ndarray, new: np.ndarray, sample_rate: int,
                      region: tuple[float, float], fade_s: float = 0.05) -> np.ndarray:
  """The kept bass outside `region`, the new one inside, joined by short equal-power fades."""
  n = len(new)
  kept = np.pad(kept, (0, max(0, n - len(kept))))[:n]
  t = np.arange(n) / sample_rate
  start, end = region
  ramp_in = np.clip((t - (start - fade_s)) / fade_s, 0.0, 1.0)
  ramp_out = np.clip(((end + fade_s) - t) / fade_s, 0.0, 1.0)
  w = np.minimum(ramp_in, ramp_out)
  w = np.sin(0.5 * np.pi * w)
  return (w * new + np.sqrt(np.maximum(0.0, 1.0 - w**2)) * kept).astype(np.float32)
