"""A trained autoencoder as a codec for audio of any length: waveform <-> (normalised) latents.

Long audio is coded in fixed-size overlapping chunks (one compiled shape, bounded memory). Each
chunk carries `margin` latent frames of context on both sides, at least the network's receptive
field, and only its centre is kept, so chunked output equals one-pass output (to float precision)
with no seam. The signal is padded with `margin` frames of silence at both ends, which is also the
one-pass reference.

Robustness: the autoencoder never saw a hard cut to digital silence in training (renders end in
natural decays), and such a cut can drive its normalisation-free encoder far outside the latent
range (measured: latents 10^5 times too large at a 20 s truncation). So the signal's first and last
`EDGE_FADE_S` are faded in/out before encoding, and latents are clipped to `LATENT_CLIP` standard
deviations around their training mean (training latents stay within about 8).
"""
from __future__ import annotations

import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bassgen import aot, spectral
from bassgen.errors import BassgenError

# Flax, Orbax and the network's code are imported where the network is built or traced, not at
# the top: a `bassgen sample` process whose weights and compiled programs come from the program
# cache (bassgen.aot) needs none of them, and they cost about 0.7 s to import.

EDGE_FADE_S = 0.01
LATENT_CLIP = 12.0


def encode_fn(graphdef: Any, params: Any, wav_BxS: jax.Array, margin: int) -> jax.Array:
  """Un-normalised latents [B, W - 2 margin, C] of windows [B, W * samples_per_latent] whose first
  and last `margin` frames are context (silence or neighbouring audio): only the centre is kept.
  Pure and jittable; the chunked `Codec.encode` and the one-jit wave->wave path both use it."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  z = nnx.merge(graphdef, params).encode(wav_BxS)
  return z[:, margin: z.shape[1] - margin]


def decode_fn(graphdef: Any, params: Any, z_BxWxC: jax.Array, margin: int,
              samples_per_latent: int) -> jax.Array:
  """Audio [B, (W - 2 margin) * samples_per_latent] of un-normalised latent windows [B, W, C],
  their `margin` context frames on each side cropped away. Pure and jittable, as `encode_fn`."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  wav = nnx.merge(graphdef, params).decode(z_BxWxC)
  crop = margin * samples_per_latent
  return wav[:, crop: wav.shape[1] - crop]



def find_export(path: str | pathlib.Path, kind: str = "autoencoder") -> pathlib.Path:
  """Accepts an export folder, a training workdir (uses `workdir/export`) or a bundle folder
  holding `<kind>/`."""
  path = pathlib.Path(path)
  for candidate in (path, path / "export", path / kind):
    if (candidate / "0").is_dir() or any(p.name.isdigit() for p in candidate.glob("*") if p.is_dir()):
      return candidate
  raise BassgenError(f"{path}: no trained {kind} found there. Give a training workdir, its "
                     "export/ folder, or the bundled experiments/demo folder.")


def read_export(directory: pathlib.Path, kind: str, build: Any,
                programs: aot.ProgramCache | None, not_kind: str,
                hint: str = "") -> tuple[dict, Any, tuple | None]:
  """(metadata, weights, shape-only build) of the model export in `directory`.

  Without `programs`, or when its cache misses, the export is read with Orbax into the shapes of
  `build(config)` (a tuple whose item 1 is the abstract parameters, as `abstract_autoencoder` and
  `generation.abstract_unet` give), and that tuple is the third item. When the weights come from
  `programs` nothing is built and it is None. An export of another kind raises `not_kind`, the
  kind found and `hint`.
  """
  built = []

  def restore():
    from bassgen import checkpointing  # pylint: disable=g-import-not-at-top
    meta = checkpointing.load_meta(directory)
    if meta.get("kind") != kind:
      raise BassgenError(f"{not_kind} (kind={meta.get('kind')!r}).{hint}")
    built.append(build(ml_collections.ConfigDict(meta["config"])))
    return meta, checkpointing.load_params(directory, built[0][1])

  meta, params = restore() if programs is None else programs.load_export(directory, restore)
  return meta, params, (built[0] if built else None)


class Codec:
  """Encode/decode with a trained autoencoder (EMA parameters) and its latent statistics."""

  def __init__(self, cfg: ml_collections.ConfigDict, params: Any, latent_mean: np.ndarray,
               latent_std: np.ndarray, *, chunk_batch: int = 4, graphdef: Any = None,
               programs: aot.ProgramCache | None = None):
    """`graphdef`: the network's structure (`abstract_autoencoder(cfg)[0]`), built from `cfg`
    on first use when not given. `programs`: where the chunk programs' executables are kept between
    processes (`bassgen.aot`; None: plain jit)."""
    self.cfg = cfg
    self.sample_rate = int(cfg.sample_rate)
    self._graphdef = graphdef
    self.params = jax.device_put(params)
    self.latent_mean = np.asarray(latent_mean, np.float32)
    self.latent_std = np.asarray(latent_std, np.float32)
    self.samples_per_latent = cfg.model.hop * 2 ** cfg.model.num_down
    self.latent_channels = cfg.model.latent_channels
    self.chunk_frames = int(cfg.chunk.latent_frames)
    self.margin = int(cfg.chunk.margin)
    self.chunk_batch = chunk_batch
    self.programs = programs
    self._scope = aot.config_scope(cfg) if programs is not None else ""

  @property
  def graphdef(self) -> Any:
    """The network's structure, built from the config on first use (only a program that is
    traced needs it)."""
    if self._graphdef is None:
      self._graphdef = abstract_autoencoder(self.cfg)[0]
    return self._graphdef

  @classmethod
  def load(cls, path: str | pathlib.Path, *, programs: aot.ProgramCache | None = None,
           **kwargs) -> "Codec":
    """The exported autoencoder in `path` (export, workdir or bundle); with `programs`, its
    weights and chunk programs come from (and go to) that cache."""
    directory = find_export(path, "autoencoder")
    meta, params, built = read_export(directory, "autoencoder", abstract_autoencoder, programs,
                                      f"{directory}: not an autoencoder export")
    return cls(ml_collections.ConfigDict(meta["config"]), params, np.asarray(meta["latent_mean"]),
               np.asarray(meta["latent_std"]), graphdef=built and built[0],
               programs=programs, **kwargs)

  # -- jitted pieces (one shape each) -------------------------------------------------------
  @functools.partial(jax.jit, static_argnums=0)
  def _encode(self, params, wav_BxS):
    return encode_fn(self.graphdef, params, wav_BxS, self.margin)

  @functools.partial(jax.jit, static_argnums=0)
  def _decode(self, params, z_BxLxC):
    return decode_fn(self.graphdef, params, z_BxLxC, self.margin, self.samples_per_latent)

  @functools.partial(jax.jit, static_argnums=0)
  def _chroma_energy(self, wav_BxS):
    spl = self.samples_per_latent
    return spectral.chroma_energy(spectral.stft_frames(wav_BxS, 4 * spl, spl), self.sample_rate)

  def _program(self, name: str) -> Any:
    """The jitted chunk function `name` (encode, decode, chroma), bound to this codec; through
    `self.programs` when there is one."""
    jitted = {"encode": Codec._encode, "decode": Codec._decode,
              "chroma": Codec._chroma_energy}[name]
    if self.programs is None:
      return functools.partial(jitted, self)
    return functools.partial(self.programs.call, f"codec/{name}", self._scope, jitted,
                             static=(self,))

  def __hash__(self):
    return id(self)

  def __eq__(self, other):
    return self is other

  # -- public API ---------------------------------------------------------------------------
  def num_latent_frames(self, num_samples: int) -> int:
    return -(-num_samples // self.samples_per_latent)

  def prepare(self, wav_S: np.ndarray, pad_to_frames: int | None = None
              ) -> tuple[np.ndarray, int]:
    """The faded signal with `margin` latent frames of silence on both sides (after zero-padding
    it to `pad_to_frames` frames, e.g. a length bucket), and its own frame count."""
    wav_S = fade_edges(np.asarray(wav_S, np.float32), int(EDGE_FADE_S * self.sample_rate))
    spl, m = self.samples_per_latent, self.margin
    num_frames = self.num_latent_frames(len(wav_S))
    padded = np.zeros(((max(num_frames, pad_to_frames or 0) + 2 * m) * spl,), np.float32)
    padded[m * spl: m * spl + len(wav_S)] = wav_S
    return padded, num_frames

  def clip_latent(self, z):
    """Un-normalised latents clipped to LATENT_CLIP std around the training mean (numpy arrays or
    jax arrays, inside jit too)."""
    return z.clip(self.latent_mean - LATENT_CLIP * self.latent_std,
                  self.latent_mean + LATENT_CLIP * self.latent_std)

  def encode(self, wav_S: np.ndarray, *, normalize: bool = True) -> np.ndarray:
    """Latents [L, C] of a mono waveform of any length (L = ceil(S / samples_per_latent))."""
    spl, m, n = self.samples_per_latent, self.margin, self.chunk_frames
    padded, num_frames = self.prepare(wav_S)
    starts = list(range(0, num_frames, n))

    def window(i):  # chunk a covers output frames [a, a + n); its input is padded frames [a, a + n + 2m)
      w = padded[starts[i] * spl: (starts[i] + n + 2 * m) * spl]
      return np.pad(w, (0, (n + 2 * m) * spl - len(w)))

    z = self._run_chunks(self._program("encode"), window, len(starts))
    z = self.clip_latent(z.reshape(-1, self.latent_channels)[:num_frames])
    return self.normalize(z) if normalize else z

  def decode(self, z_LxC: np.ndarray, num_samples: int | None = None, *,
             normalized: bool = True) -> np.ndarray:
    """Waveform of latents [L, C] (or [K, L, C]: K waveforms [K, S], decoded as one batch of
    chunks); `num_samples` crops the result (default L * samples_per_latent)."""
    z = np.asarray(z_LxC, np.float32)
    z = self.denormalize(z) if normalized else z
    batch = z.ndim == 3
    z_KxLxC = z if batch else z[None]
    spl, m, n = self.samples_per_latent, self.margin, self.chunk_frames
    k, num_frames, c = z_KxLxC.shape
    padded = np.concatenate([np.zeros((k, m, c), np.float32), z_KxLxC,
                             np.zeros((k, n + m, c), np.float32)], axis=1)
    chunks = -(-num_frames // n)   # variant-major: window i is chunk i % chunks of variant i // chunks
    window = lambda i: padded[i // chunks, (i % chunks) * n: (i % chunks) * n + n + 2 * m]
    wav = self._run_chunks(self._program("decode"), window, k * chunks)
    wav = wav.reshape(k, -1)[:, : (num_samples or num_frames * spl)]
    return wav if batch else wav[0]

  def chroma(self, wav_S: np.ndarray) -> np.ndarray:
    """The pitch-class profile [L, 12] on the latent frame grid (`spectral.chroma_frames`): the
    extra condition channels of a diffusion model with `model.mix_chroma`.

    The STFT runs in chunks of `chunk_frames` frames (one compiled shape at any length, bounded
    memory); the clip-wide normalisation runs on the host.
    """
    wav_S = np.asarray(wav_S, np.float32)
    spl, n = self.samples_per_latent, self.chunk_frames
    n_fft = 4 * spl
    num_frames = self.num_latent_frames(len(wav_S))
    x = wav_S[spl // 2:]   # as chroma_frames: STFT frame t centred on latent frame t
    stft_frames = 1 + len(x) // spl   # frames past these are zero padding there
    padded = np.zeros((num_frames + n) * spl + n_fft, np.float32)
    padded[n_fft // 2: n_fft // 2 + len(x)] = x
    width = (n - 1) * spl + n_fft
    window = lambda i: padded[i * n * spl: i * n * spl + width]
    energy = self._run_chunks(self._program("chroma"), window, -(-num_frames // n),
                              with_params=False).reshape(-1, 12)[:num_frames]
    energy[stft_frames:] = 0.0
    return np.asarray(spectral.chroma_normalize(energy[None].astype(np.float64))[0], np.float32)

  def reconstruct(self, wav_S: np.ndarray) -> np.ndarray:
    return self.decode(self.encode(wav_S, normalize=False), len(wav_S), normalized=False)

  def one_pass(self, wav_S: np.ndarray) -> np.ndarray:
    """Reference for the chunked path: the whole (silence-padded) signal in one call."""
    m = self.margin
    padded, num_frames = self.prepare(wav_S)
    z = self.clip_latent(np.asarray(self._encode(self.params, padded[None]))[0, :num_frames])
    zp = np.pad(z, ((m, m), (0, 0)))   # silence on both sides, as `decode`
    return np.asarray(self._decode(self.params, zp[None]))[0, : len(wav_S)]

  def normalize(self, z: Any) -> Any:
    """Latents to the diffusion model's scale (numpy or jax arrays, inside jit too)."""
    return (z - self.latent_mean) / self.latent_std

  def denormalize(self, z: Any) -> Any:
    """The inverse of `normalize` (numpy or jax arrays, inside jit too)."""
    return z * self.latent_std + self.latent_mean

  def _run_chunks(self, fn, window, count: int, with_params: bool = True) -> np.ndarray:
    """`fn(params, batch)` (or `fn(batch)`) over the `count` windows `window(i)` gives: full
    batches of `chunk_batch`, the rest one at a time. Two compiled shapes at any length (both in
    the persistent compilation cache after the first long song), no work on padding, and only
    one batch of input windows in memory at a time."""
    args = (self.params,) if with_params else ()
    k = max(1, self.chunk_batch)
    calls = [(i, k) for i in range(0, count - count % k, k)]
    calls += [(i, 1) for i in range(count - count % k, count)]
    outs = [np.asarray(fn(*args, jnp.asarray(np.stack([window(j) for j in range(i, i + b)]))))
            for i, b in calls]
    return np.concatenate(outs)


def abstract_autoencoder(cfg: ml_collections.ConfigDict) -> tuple[Any, Any]:
  """(graphdef, parameter shapes) of the autoencoder of `cfg`, from `nnx.eval_shape`: the
  structure without running any initialiser; restore the weights into the shapes."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from bassgen.models import autoencoder, shapes  # pylint: disable=g-import-not-at-top
  graphdef, state = shapes.abstract_model(lambda rngs: autoencoder.Autoencoder(
      autoencoder.AutoencoderConfig.from_config(cfg.model), rngs=rngs))
  return graphdef, nnx.to_pure_dict(state)


def fade_edges(wav_S: np.ndarray, n: int) -> np.ndarray:
  """Raised-cosine fade-in over the first `n` samples and fade-out over the last `n`."""
  n = min(n, len(wav_S) // 2)
  if n <= 0:
    return wav_S
  ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
  out = wav_S.copy()
  out[:n] *= ramp
  out[-n:] *= ramp[::-1]
  return out
