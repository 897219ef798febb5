"""The audio autoencoder of DESIGN.md §1: compressed complex STFT -> 1-D conv encoder -> unbounded
latent -> mirrored decoder -> complex STFT -> inverse STFT. No vocoder.

Shapes: `wav_BxS` audio, `spec_BxTxF` complex STFT (T = S // hop frames, F = n_fft // 2 + 1 bins),
`feat_BxTx2F` the network's view (real and imaginary parts of the compressed STFT as channels),
`z_BxLxC` latents (L = T // 2**num_down frames, C = latent_channels).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from bassgen import spectral
from bassgen.models import typed
from bassgen.models.layers import AXIS_IN, AXIS_OUT, partitioned


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
  """The autoencoder's architecture (the `model` section of configs/autoencoder.py)."""
  n_fft: int
  hop: int
  spec_exponent: float          # the network sees |X|^a e^{i phi}
  num_down: int                 # time down-sampling 2**num_down after the STFT hop
  widths: tuple[int, ...]       # one per resolution (num_down + 1)
  dilations: tuple[int, ...]    # one residual block per entry, at every resolution
  kernel_size: int
  latent_channels: int

  def __post_init__(self):
    if self.n_fft % self.hop:
      raise ValueError("model.n_fft must be a multiple of model.hop")
    if len(self.widths) != self.num_down + 1:
      raise ValueError("model.widths needs num_down + 1 entries (one per resolution)")

  @classmethod
  def from_config(cls, section) -> "AutoencoderConfig":
    return typed.from_section(cls, section)


def _conv(c_in: int, c_out: int, k: int, *, rngs: nnx.Rngs, stride: int = 1, dilation: int = 1,
          scale: float = 1.0) -> nnx.Conv:
  init = nnx.initializers.variance_scaling(scale, "fan_in", "truncated_normal")
  return nnx.Conv(
      c_in, c_out, kernel_size=(k,), strides=(stride,), kernel_dilation=(dilation,),
      padding="SAME", rngs=rngs,
      kernel_init=partitioned(init, (None, AXIS_IN, AXIS_OUT)),
      bias_init=partitioned(nnx.initializers.zeros_init(), (AXIS_OUT,)))


class ResBlock(nnx.Module):
  """x + conv1(act(conv_k,dilated(act(x)))); the last conv starts small so each block starts near identity."""

  def __init__(self, c: int, dilation: int, kernel_size: int, *, rngs: nnx.Rngs):
    self.conv1 = _conv(c, c, kernel_size, dilation=dilation, rngs=rngs)
    self.conv2 = _conv(c, c, 1, scale=0.1, rngs=rngs)

  def __call__(self, x_BxTxC: jax.Array) -> jax.Array:
    h = self.conv1(jax.nn.silu(x_BxTxC))
    return x_BxTxC + self.conv2(jax.nn.silu(h))


class Encoder(nnx.Module):

  def __init__(self, cfg: AutoencoderConfig, *, rngs: nnx.Rngs):
    widths = list(cfg.widths)
    n_bins = cfg.n_fft // 2 + 1
    self.conv_in = _conv(2 * n_bins, widths[0], cfg.kernel_size, rngs=rngs)
    self.stages = nnx.List()
    for i, w in enumerate(widths):
      blocks = nnx.List([ResBlock(w, d, cfg.kernel_size, rngs=rngs) for d in cfg.dilations])
      w_next = widths[min(i + 1, len(widths) - 1)]
      down = _conv(w, w_next, 4, stride=2, rngs=rngs) if i < cfg.num_down else None
      self.stages.append(nnx.List([blocks, down]) if down is not None else nnx.List([blocks]))
    self.conv_out = _conv(widths[-1], cfg.latent_channels, cfg.kernel_size, rngs=rngs)

  def __call__(self, feat_BxTxF: jax.Array) -> jax.Array:
    h = self.conv_in(feat_BxTxF)
    for stage in self.stages:
      for block in stage[0]:
        h = block(h)
      if len(stage) > 1:
        h = stage[1](jax.nn.silu(h))
    return self.conv_out(jax.nn.silu(h))


class Decoder(nnx.Module):

  def __init__(self, cfg: AutoencoderConfig, *, rngs: nnx.Rngs):
    widths = list(cfg.widths)[::-1]
    n_bins = cfg.n_fft // 2 + 1
    self.conv_in = _conv(cfg.latent_channels, widths[0], cfg.kernel_size, rngs=rngs)
    self.stages = nnx.List()
    for i, w in enumerate(widths):
      blocks = nnx.List([ResBlock(w, d, cfg.kernel_size, rngs=rngs) for d in cfg.dilations])
      # Every stage but the last ends in a 2x upsampling (nearest + conv: no checkerboard).
      if i < cfg.num_down:
        w_next = widths[min(i + 1, len(widths) - 1)]
        self.stages.append(nnx.List([blocks, _conv(w, w_next, 3, rngs=rngs)]))
      else:
        self.stages.append(nnx.List([blocks]))
    self.conv_out = _conv(widths[-1], 2 * n_bins, cfg.kernel_size, rngs=rngs)

  def __call__(self, z_BxLxC: jax.Array) -> jax.Array:
    h = self.conv_in(z_BxLxC)
    for stage in self.stages:
      for block in stage[0]:
        h = block(h)
      if len(stage) > 1:
        h = stage[1](jnp.repeat(jax.nn.silu(h), 2, axis=1))
    return self.conv_out(jax.nn.silu(h))


class Autoencoder(nnx.Module):
  """Waveform <-> latent: `Autoencoder(AutoencoderConfig.from_config(config.model), rngs=...)`."""

  def __init__(self, cfg: AutoencoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = Encoder(cfg, rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)

  @property
  def samples_per_latent(self) -> int:
    return self.cfg.hop * 2 ** self.cfg.num_down

  def analysis(self, wav_BxS: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns (complex STFT [B, T, F], network features [B, T, 2F]) with T = S // hop."""
    s = wav_BxS.shape[-1]
    if s % self.samples_per_latent:
      raise ValueError(f"audio length {s} must be a multiple of {self.samples_per_latent} samples "
                       "(pad it: bassgen.codec pads and crops for you)")
    spec = spectral.stft(wav_BxS, self.cfg.n_fft, self.cfg.hop)[:, : s // self.cfg.hop]
    return spec, compress(spec, self.cfg.spec_exponent)

  def encode(self, wav_BxS: jax.Array) -> jax.Array:
    return self.encoder(self.analysis(wav_BxS)[1])

  def decode_features(self, z_BxLxC: jax.Array) -> jax.Array:
    return self.decoder(z_BxLxC)

  def synthesis(self, feat_BxTx2F: jax.Array) -> jax.Array:
    spec = decompress(feat_BxTx2F, self.cfg.spec_exponent)
    t = spec.shape[1]
    return spectral.istft(spec, self.cfg.n_fft, self.cfg.hop, length=t * self.cfg.hop)

  def decode(self, z_BxLxC: jax.Array) -> jax.Array:
    return self.synthesis(self.decode_features(z_BxLxC))

  def __call__(self, wav_BxS: jax.Array) -> jax.Array:
    return self.decode(self.encode(wav_BxS))


def compress(spec_BxTxF: jax.Array, exponent: float) -> jax.Array:
  """|X|^a e^{i phi} as [real, imag] channels: quiet detail is amplified, the phase is kept."""
  mag = jnp.abs(spec_BxTxF)
  scale = jnp.where(mag > 1e-12, (mag + 1e-12) ** (exponent - 1.0), 0.0)
  c = spec_BxTxF * scale
  return jnp.concatenate([c.real, c.imag], axis=-1).astype(jnp.float32)


def decompress(feat_BxTx2F: jax.Array, exponent: float) -> jax.Array:
  """Inverse of `compress` (complex [B, T, F])."""
  re, im = jnp.split(feat_BxTx2F, 2, axis=-1)
  c = re + 1j * im
  mag = jnp.sqrt(re**2 + im**2 + 1e-18)
  return c * mag ** (1.0 / exponent - 1.0)
