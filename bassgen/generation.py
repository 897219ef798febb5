"""Mix in, bass out: the trained autoencoder and diffusion model behind one object.

    gen = BassGenerator.load("experiments/demo")
    basses = gen.generate(mix_wav, sample_rate, style_wav=None, num_samples=1)

The mix is resampled to the model's rate, encoded and normalised; the diffusion sampler (one
jitted function per length bucket: a new song length rarely compiles again) draws bass latents
with guidance, rescale and optional style grounding; the decoder returns audio at the input's rate
and length. Regenerating a region keeps a given bass outside it (latent inpainting).
"""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bassgen import aot, samplers, sharding, spectral
from bassgen import codec as codec_lib
from bassgen.codec import Codec, find_export
from bassgen.data import audio
from bassgen.data import labels as data_labels
from bassgen.errors import BassgenError
from bassgen.models import unet_config

# As in bassgen.codec, Flax, Orbax and the network code are imported where the U-Net is built or
# traced: a process whose weights and programs come from the program cache needs none of them.


def condition(codec: Codec, model_cfg: ml_collections.ConfigDict, mix: np.ndarray,
              z_mix: np.ndarray) -> np.ndarray:
  """The U-Net's condition [L, C'] for a mix at the codec's rate and its normalised latent: the
  latent, followed by the mix's chroma when `model_cfg.mix_chroma`."""
  if model_cfg.get("mix_chroma", False):
    return np.concatenate([z_mix, codec.chroma(mix)], axis=-1)
  return z_mix


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

  def __init__(self, codec: Codec, cfg: ml_collections.ConfigDict, params: Any, *,
               structure: tuple[Any, Any] | None = None,
               mesh: jax.sharding.Mesh | None = None, programs: aot.ProgramCache | None = None):
    """`params`: the U-Net's weights as nested dicts (`nnx.to_pure_dict`). `structure`: its
    (graphdef, logical parameter specs) as `abstract_unet(cfg)` gives them; when not given they
    are built from `cfg` on first use (a shape-only build: no initialiser runs), which a process
    whose compiled programs all come from `programs` never needs.

    `mesh`: the devices the sampler runs on (default: one device). Its weights are laid out by
    the same logical-axis rules as in training (large ones split over `fsdp`), and a batch of
    variants that divides over the devices is split over them (`sharding.batch_or_replicated`).

    `programs`: a `bassgen.aot.ProgramCache` that keeps the sampler's compiled programs between
    processes (used on one device only; with a larger mesh the sampler is traced as usual).
    """
    self.codec = codec
    self.cfg = cfg
    self._structure = structure
    self.mesh = mesh if mesh is not None else sharding.make_mesh((1, 1), devices=jax.devices()[:1])
    if self.mesh.devices.size == 1:   # nothing to split: every weight whole on the one device
      self.params = jax.device_put(params, jax.sharding.NamedSharding(
          self.mesh, jax.sharding.PartitionSpec()))
    else:
      rules = sharding.mesh_config().rules
      min_size = cfg.get("mesh", {}).get("min_shard_size", sharding.mesh_config().min_shard_size)
      self.params = jax.device_put(params, sharding.shardings_from_specs(
          self._built()[1], params, self.mesh, rules, min_size))
    self.length_multiple = unet_config.length_multiple(cfg.model)
    self.programs = programs if self.mesh.devices.size == 1 else None
    self._samplers: dict[tuple[str, int], Any] = {}
    self._wave_fns: dict[tuple[str, int], Any] = {}

  def _built(self) -> tuple[Any, Any]:
    """(graphdef, logical specs) of the U-Net, built from the config on first use."""
    if self._structure is None:
      graphdef, _, logical = abstract_unet(self.cfg)
      self._structure = (graphdef, logical)
    return self._structure

  @property
  def graphdef(self) -> Any:
    """The U-Net's structure (`nnx.split`'s graphdef); `self.params` are its weights."""
    return self._built()[0]

  @classmethod
  def load(cls, path: str | pathlib.Path, *,
           mesh: jax.sharding.Mesh | None = None,
           programs: aot.ProgramCache | None = None) -> "BassGenerator":
    """`path`: a bundle folder holding `autoencoder/` and `ldm/` (like experiments/demo), or a
    diffusion training workdir/export whose config names its autoencoder. `mesh`: as for the
    constructor (e.g. `sharding.make_mesh((-1, 1))` for every device of a TPU host).
    `programs`: a `bassgen.aot.ProgramCache`; the compiled programs and the weights then come
    from (and go to) it, so a later process neither traces nor compiles the programs, nor reads
    the exports with Orbax or builds the models' structure."""
    path = pathlib.Path(path)
    if not path.exists():
      raise BassgenError(f"{path}: no such checkpoint folder. Give the bundled experiments/demo "
                         "folder or a diffusion training workdir.")
    ldm_dir = find_export(path, "ldm")
    meta, params, built = codec_lib.read_export(
        ldm_dir, "ldm", abstract_unet, programs, f"{ldm_dir}: not a diffusion model export",
        " Give the bundled experiments/demo folder or a diffusion workdir.")
    cfg = ml_collections.ConfigDict(meta["config"])
    ae_dir = path / "autoencoder" if (path / "autoencoder").is_dir() else pathlib.Path(
        meta["autoencoder_checkpoint"])
    return cls(Codec.load(ae_dir, programs=programs), cfg, params,
               structure=built and (built[0], built[2]), mesh=mesh, programs=programs)

  @property
  def sample_rate(self) -> int:
    return self.codec.sample_rate

  def _sample_cfg(self, opts: SampleOptions) -> ml_collections.ConfigDict:
    """The model's `sample` section with the user's choices applied (and checked)."""
    s = ml_collections.ConfigDict(self.cfg.sample.to_dict())
    for field, name in (("guidance", "guidance_w"), ("rescale", "rescale_phi"),
                        ("ground_strength", "ground_strength"), ("steps", "steps"),
                        ("sampler", "sampler")):
      value = getattr(opts, field)
      if value is not None:
        s[name] = value
    s.seed = opts.seed
    samplers.check_sampler(s.sampler, int(s.steps))
    return s

  def _sampler(self, sampler: str, steps: int):
    """The jitted sampler (it reports its steps to the `progress` it is called with)."""
    key = (sampler, steps)
    if key not in self._samplers:
      self._samplers[key] = samplers.make_sampler(
          lambda: self.graphdef, sigma_data=self.cfg.diffusion.sigma_data, sampler=sampler,
          steps=steps, programs=self.programs,
          channels=(self.cfg.model.latent_channels,
                    unet_config.cond_channels(self.cfg.model)),
          scope=aot.config_scope(self.cfg) if self.programs is not None else "")
    return self._samplers[key]

  def condition(self, mix: np.ndarray, z_mix: np.ndarray) -> np.ndarray:
    return condition(self.codec, self.cfg.model, mix, z_mix)

  def pitch_class_channels(self, labels: np.ndarray, num_frames: int,
                           onsets: np.ndarray | None = None) -> np.ndarray:
    """The harmony pathway's condition channels for a given bass pitch class per latent frame
    (0..11, 12 = no bass; held through rests as in training) in place of the heads' prediction:
    a control that tells the U-Net the true notes. [num_frames, 12], or [num_frames, 13] for a
    model with the onset channel, whose note starts are `onsets` (per frame, 0/1; by default
    where the labels start or change pitch class)."""
    if not unet_config.harmony_enabled(self.cfg.model):
      raise BassgenError("pitch_classes needs a model with the harmony pathway (model.harmony)")
    fit = lambda x, fill: np.pad(np.asarray(x)[:num_frames], (0, max(0, num_frames - len(x))),
                                 constant_values=fill)
    from bassgen.models import harmony  # pylint: disable=g-import-not-at-top
    labels = fit(labels, harmony.NUM_PC)
    out = harmony.teacher_channels(labels)
    if unet_config.onsets_enabled(self.cfg.model):
      starts = fit(onsets, 0) if onsets is not None else data_labels.onsets_from_labels(labels)
      out = np.concatenate([out, starts[:, None].astype(np.float32)], axis=-1)
    return out

  def style_of(self, style_wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's per-channel latent (mean [1, C], std [1, C]) (`samplers.style_stats`, on
    the host)."""
    z = self.codec.encode(audio.resample(style_wav, sample_rate, self.sample_rate))
    return z.mean(axis=0)[None], z.std(axis=0)[None]

  def sample_latents(self, mix_wav: np.ndarray, sample_rate: int, **kwargs) -> np.ndarray:
    """Normalised bass latents [num_samples, L, C] for `mix_wav`; keyword arguments as for
    `generate`."""
    return self._sample_latents(mix_wav, sample_rate, **kwargs)[0]

  def _sample_latents(self, mix_wav: np.ndarray, sample_rate: int, *,
                      style_wav: np.ndarray | None = None, style_sample_rate: int | None = None,
                      options: SampleOptions | None = None, keep_bass: np.ndarray | None = None,
                      regenerate: tuple[float, float] | None = None,
                      progress: Any = None, pitch_classes: np.ndarray | None = None,
                      onsets: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(latents, length of the mix at the model's rate)."""
    opts = options or SampleOptions()
    scfg = self._sample_cfg(opts)
    mix = audio.resample(mix_wav, sample_rate, self.sample_rate)
    z_mix = self.codec.encode(mix)
    k = max(1, int(opts.num_samples))
    cond = self.condition(mix, z_mix)
    if pitch_classes is not None:
      cond = np.concatenate([cond, self.pitch_class_channels(pitch_classes, len(cond), onsets)],
                            -1)
    cond = np.repeat(cond[None], k, axis=0)
    style = None
    if style_wav is not None:
      mean, std = self.style_of(style_wav, style_sample_rate or sample_rate)
      style = (np.repeat(mean, k, 0), np.repeat(std, k, 0))
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
      known = np.repeat(z_keep[None, : z_mix.shape[0]], k, 0)
      known_mask = np.repeat(mask[None].astype(np.float32), k, 0)
    # A label opens a bar here; a bar-like object (tqdm's `update`) is counted as it is.
    bar = (samplers.progress_bar(int(scfg.steps), progress) if isinstance(progress, str)
           else contextlib.nullcontext(progress))
    with bar as counter:
      sample_fn = self._sampler(scfg.sampler, int(scfg.steps))
      z = samplers.generate(sample_fn, self.params, cond, cfg=scfg,
                            length_multiple=self.length_multiple, key=jax.random.key(opts.seed),
                            style=style, known_BxTxC=known, known_mask_BxT=known_mask,
                            mesh=self.mesh, progress=counter)
      return np.asarray(z), len(mix)

  def generate(self, mix_wav: np.ndarray, sample_rate: int, *, style_wav: np.ndarray | None = None,
               style_sample_rate: int | None = None, options: SampleOptions | None = None,
               keep_bass: np.ndarray | None = None, regenerate: tuple[float, float] | None = None,
               progress: Any = None, pitch_classes: np.ndarray | None = None,
               onsets: np.ndarray | None = None) -> list[np.ndarray]:
    """`num_samples` bass waveforms at `sample_rate`, each as long as `mix_wav`. With `progress`
    (a label), a bar on stderr shows the sampler's steps and ETA; a tqdm-like object (`update(n)`)
    is given the steps instead. `pitch_classes`: a bass pitch
    class per latent frame to condition on instead of the harmony head's path, and `onsets` the
    bass note starts per latent frame for a model with the onset channel (a control)."""
    z, model_len = self._sample_latents(
        mix_wav, sample_rate, style_wav=style_wav, style_sample_rate=style_sample_rate,
        options=options, keep_bass=keep_bass, regenerate=regenerate, progress=progress,
        pitch_classes=pitch_classes, onsets=onsets)
    n = len(mix_wav)
    outs = []
    for bass in self.codec.decode(z, model_len):   # every variant in one batch of chunks
      bass = audio.resample(bass, self.sample_rate, sample_rate)
      bass = np.pad(bass, (0, max(0, n - len(bass))))[:n]
      if regenerate is not None:
        bass = _crossfade_region(keep_bass[:n], bass, sample_rate, regenerate)
      outs.append(bass.astype(np.float32))
    return outs

  def wave_to_wave(self, mix_wav: np.ndarray, sample_rate: int, *,
                   options: SampleOptions | None = None) -> np.ndarray:
    """The whole path as ONE jitted function per length bucket: encode → sample → decode.

    Returns [num_samples, len(mix_wav)] bass waveforms at `sample_rate`. The mix is resampled,
    faded at its edges and padded with silence to a length bucket on the host; everything else
    (autoencoder, chroma, guided sampling, decoder) runs inside `make_wave_to_wave`'s jit. The
    codec works in one pass here, so memory grows with the length: `generate` (chunked codec)
    is the path for long songs, and the CLI's.
    """
    opts = options or SampleOptions()
    scfg = self._sample_cfg(opts)
    mix = audio.resample(mix_wav, sample_rate, self.sample_rate)
    frames = self.codec.num_latent_frames(len(mix))
    bucket = samplers.bucket_length(frames, scfg.bucket_multiple, scfg.buckets)
    k = max(1, int(opts.num_samples))
    padded, _ = self.codec.prepare(mix, pad_to_frames=bucket)
    frame_mask = np.zeros((k, bucket), np.float32)
    frame_mask[:, :frames] = 1.0
    key = (scfg.sampler, int(scfg.steps))
    if key not in self._wave_fns:
      self._wave_fns[key] = make_wave_to_wave(self, scfg.sampler, int(scfg.steps))
    bass = self._wave_fns[key](self.codec.params, self.params,
                               jnp.asarray(np.repeat(padded[None], k, 0)),
                               jnp.asarray(frame_mask), jax.random.key(opts.seed),
                               samplers.sampler_knobs(scfg))
    bass = np.asarray(bass)[:, : len(mix)]
    out = [audio.resample(b, self.sample_rate, sample_rate) for b in bass]
    n = len(mix_wav)
    return np.stack([np.pad(b, (0, max(0, n - len(b))))[:n] for b in out]).astype(np.float32)


def abstract_unet(cfg: ml_collections.ConfigDict) -> tuple[Any, Any, Any]:
  """(graphdef, parameter shapes, the parameters' logical axis specs) of the U-Net of `cfg`, from
  `nnx.eval_shape`: no initialiser runs. The U-Net holds parameters only (its dropout draws a key
  passed at call time), which `nnx.split` checks here."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from bassgen.models import shapes, unet  # pylint: disable=g-import-not-at-top
  graphdef, params, rest = shapes.abstract_model(
      lambda rngs: unet.UNet1D(unet.UNetConfig.from_config(cfg.model), rngs=rngs), nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise TypeError(f"the U-Net holds state besides its parameters: {rest}")
  return graphdef, nnx.to_pure_dict(params), sharding.logical_specs(params)


def make_wave_to_wave(gen: BassGenerator, sampler: str, steps: int) -> Any:
  """`fn(ae_params, ldm_state, mix_BxS, frame_mask_BxT, key, knobs) -> bass_BxS`, jitted.

  `mix_BxS` is the mix at the model's rate with `codec.margin` latent frames of silence before
  it and after the bucket (T = frame_mask's length frames in between, zero-padded); the output
  starts at the mix's first sample. Compiles once per (bucket, batch); weights, knobs and key are
  arguments, so changing them never recompiles.
  """
  codec, cfg = gen.codec, gen.cfg
  spl, m = codec.samples_per_latent, codec.margin
  chroma = cfg.model.get("mix_chroma", False)
  sampler_cfg = {"sampler": sampler, "steps": steps}

  def run(ae_params, ldm_state, mix_BxS, frame_mask_BxT, key, knobs):
    t = frame_mask_BxT.shape[1]
    cond = codec.normalize(codec.clip_latent(
        codec_lib.encode_fn(codec.graphdef, ae_params, mix_BxS, m)))
    if chroma:
      cond = jnp.concatenate([cond, spectral.chroma_frames(
          mix_BxS[:, m * spl:], codec.sample_rate, spl, t, frame_mask_BxT)], axis=-1)
    denoise_fn, model = samplers.model_denoiser(gen.graphdef, ldm_state,
                                                cfg.diffusion.sigma_data)
    cond = samplers.complete_condition(model, cond, knobs)
    z_bass = samplers.sample(denoise_fn, cond, key, cfg=dict(knobs, **sampler_cfg),
                             frame_mask_BxT=frame_mask_BxT, latent_channels=model.latent_channels)
    z_bass = jnp.pad(codec.denormalize(z_bass), ((0, 0), (m, m), (0, 0)))   # silence either side
    return codec_lib.decode_fn(codec.graphdef, ae_params, z_bass, m, spl)

  return jax.jit(run)


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
