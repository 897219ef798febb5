"""STFT, inverse STFT and mel spectra in JAX, matching librosa's conventions.

Conventions (librosa's defaults): periodic Hann window, `center=True` with zero padding of
n_fft // 2 on both sides, frames `1 + S // hop`, output [..., frames, bins] (time first, as the
networks read it). The inverse divides the overlap-added frames by the summed squared window, so
`istft(stft(x)) == x` for any hop with enough overlap.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def hann_window(n_fft: int) -> np.ndarray:
  """Periodic Hann window, as `scipy.signal.get_window('hann', n, fftbins=True)`."""
  n = np.arange(n_fft)
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)


def num_frames(num_samples: int, hop: int) -> int:
  return 1 + num_samples // hop


def _check(n_fft: int, hop: int):
  if n_fft % hop:
    raise ValueError(f"n_fft ({n_fft}) must be a multiple of hop ({hop})")


def frame(x_BxS: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """Splits a padded signal into overlapping frames [B, T, n_fft] with T = 1 + (S - n_fft) // hop.

  Built from hop-sized chunks (n_fft / hop shifted views), which is far cheaper than a gather.
  """
  _check(n_fft, hop)
  r = n_fft // hop
  s = x_BxS.shape[-1]
  t = 1 + (s - n_fft) // hop
  chunks = x_BxS[..., : (t + r - 1) * hop].reshape(*x_BxS.shape[:-1], t + r - 1, hop)
  return jnp.concatenate([chunks[..., k:k + t, :] for k in range(r)], axis=-1)


def overlap_add(frames_BxTxN: jax.Array, hop: int) -> jax.Array:
  """Inverse of `frame`: sums frames [B, T, N] at stride hop into [B, (T - 1) * hop + N]."""
  n = frames_BxTxN.shape[-1]
  _check(n, hop)
  r = n // hop
  t = frames_BxTxN.shape[-2]
  lead = frames_BxTxN.shape[:-2]
  chunks = frames_BxTxN.reshape(*lead, t, r, hop)
  out = jnp.zeros((*lead, t + r - 1, hop), frames_BxTxN.dtype)
  for k in range(r):
    out = out.at[..., k:k + t, :].add(chunks[..., :, k, :])
  return out.reshape(*lead, (t + r - 1) * hop)


def stft(x_BxS: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """Complex STFT [B, T, n_fft // 2 + 1] with T = 1 + S // hop (librosa, center=True, zeros)."""
  pad = n_fft // 2
  widths = [(0, 0)] * (x_BxS.ndim - 1) + [(pad, pad)]
  return stft_frames(jnp.pad(x_BxS, widths), n_fft, hop)


def stft_frames(x_BxS: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """Complex STFT of an already padded signal: frame t covers samples [t·hop, t·hop + n_fft)
  (`stft` is this after librosa's centre padding); chunks of a long signal cut at frame
  boundaries, overlapping by n_fft - hop samples, give the frames of the whole."""
  frames = frame(x_BxS, n_fft, hop) * jnp.asarray(hann_window(n_fft))
  return jnp.fft.rfft(frames, n=n_fft, axis=-1)


def istft(spec_BxTxF: jax.Array, n_fft: int, hop: int, length: int | None = None) -> jax.Array:
  """Inverse of `stft` (librosa.istft with center=True): least-squares overlap-add."""
  window = jnp.asarray(hann_window(n_fft))
  frames = jnp.fft.irfft(spec_BxTxF, n=n_fft, axis=-1) * window
  y = overlap_add(frames, hop)
  t = spec_BxTxF.shape[-2]
  wsum = overlap_add(jnp.broadcast_to(window**2, (t, n_fft)), hop)
  y = y / jnp.where(wsum > 1e-8, wsum, 1.0)
  pad = n_fft // 2
  y = y[..., pad:]
  if length is None:
    length = (t - 1) * hop
  if y.shape[-1] < length:
    y = jnp.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, length - y.shape[-1])])
  return y[..., :length]


@functools.lru_cache(maxsize=None)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  """librosa's Slaney mel filterbank, transposed to [bins, mels] for `spec @ fb`."""
  import librosa  # pylint: disable=g-import-not-at-top

  fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
  return np.ascontiguousarray(fb.T.astype(np.float32))


def safe_mag(spec: jax.Array, eps: float = 1e-12) -> jax.Array:
  """|X| with a finite gradient at X = 0 (a silent crop, or a freshly initialised decoder)."""
  return jnp.sqrt(spec.real**2 + spec.imag**2 + eps)


def mel_power(x_BxS: jax.Array, sample_rate: int, n_fft: int, hop: int, n_mels: int, *,
              differentiable: bool = False) -> jax.Array:
  """Mel power spectrogram [B, T, n_mels] (librosa.feature.melspectrogram, power 2).
  `differentiable`: magnitudes by `safe_mag`, for losses."""
  spec = stft(x_BxS, n_fft, hop)
  mag2 = (safe_mag(spec) if differentiable else jnp.abs(spec)) ** 2
  return mag2 @ jnp.asarray(mel_filterbank(sample_rate, n_fft, n_mels))


CHROMA_FMIN = 55.0  # A1: below it a bin is wider than a semitone at the FFT sizes used here
CHROMA_FMAX = 2000.0


@functools.lru_cache(maxsize=None)
def chroma_filterbank(sample_rate: int, n_fft: int, fmin: float = CHROMA_FMIN,
                      fmax: float = CHROMA_FMAX) -> np.ndarray:
  """[bins, 12] weights from STFT power to pitch-class energy (C = 0).

  Each bin between fmin and fmax shares its power between the two nearest pitch classes, linearly
  in its fractional MIDI number; bins outside the band get no weight.
  """
  freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
  fb = np.zeros((freqs.size, 12), np.float32)
  band = (freqs >= fmin) & (freqs <= min(fmax, sample_rate / 2))
  midi = 69.0 + 12.0 * np.log2(freqs[band] / 440.0)
  lo = np.floor(midi)
  frac = midi - lo
  rows = np.nonzero(band)[0]
  np.add.at(fb, (rows, lo.astype(int) % 12), 1.0 - frac)
  np.add.at(fb, (rows, (lo.astype(int) + 1) % 12), frac)
  return fb


def chroma_frames(x_BxS: jax.Array, sample_rate: int, hop: int, num_frames: int,
                  frame_mask_BxT: jax.Array | None = None) -> jax.Array:
  """Pitch-class profile per frame of `hop` samples, [B, num_frames, 12], each row summing to ≤ 1.

  Frame t summarises samples [t·hop, (t+1)·hop) (a window of 4·hop centred on that span), so it
  lines up with latent frame t of an autoencoder with `hop` samples per latent frame. Rows are
  the pitch-class shares of the frame's energy; frames much quieter than the clip's average fade
  towards zero instead of amplifying noise. Invariant to the clip's gain. `frame_mask_BxT`
  (1 = real frame) keeps padding out of the clip's average.

  In two steps for long signals (`Codec.chroma` runs the first in fixed-size chunks):
  `chroma_energy` of the frames, then `chroma_normalize` over the clip.
  """
  n_fft = 4 * hop
  x = x_BxS[..., hop // 2:]  # centre STFT frame t on the middle of latent frame t
  energy = chroma_energy(stft(x, n_fft, hop), sample_rate)
  t = energy.shape[-2]
  if t < num_frames:
    energy = jnp.pad(energy, [(0, 0)] * (energy.ndim - 2) + [(0, num_frames - t), (0, 0)])
  return chroma_normalize(energy[..., :num_frames, :], frame_mask_BxT)


def chroma_energy(spec_BxTxF: jax.Array, sample_rate: int) -> jax.Array:
  """Pitch-class energy [B, T, 12] of a complex STFT with n_fft = 2 (F - 1)."""
  n_fft = 2 * (spec_BxTxF.shape[-1] - 1)
  power = jnp.abs(spec_BxTxF) ** 2
  return power @ jnp.asarray(chroma_filterbank(sample_rate, n_fft))


def chroma_normalize(energy_BxTx12, frame_mask_BxT=None):
  """Each frame's pitch-class shares of its energy, with a floor at 1e-3 of the clip's mean
  energy per frame. Array methods only, so it runs on numpy arrays on the host as it does on jax
  arrays inside jit."""
  total = energy_BxTx12.sum(axis=-1, keepdims=True)
  if frame_mask_BxT is None:
    mean = total.mean(axis=-2, keepdims=True)
  else:
    w = frame_mask_BxT[..., None].astype(total.dtype)
    mean = (total * w).sum(axis=-2, keepdims=True) / w.sum(axis=-2, keepdims=True).clip(min=1.0)
  floor = 1e-3 * mean + 1e-12
  return energy_BxTx12 / total.clip(min=floor)
