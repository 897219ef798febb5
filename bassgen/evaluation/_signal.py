"""Input checks shared by the metric modules: every metric takes plain mono waveforms."""
from __future__ import annotations

import numpy as np

from bassgen.errors import BassgenError


def as_mono(wav, name: str, *, min_samples: int = 1) -> np.ndarray:
  """Returns `wav` as a finite float64 [S] array, or raises BassgenError naming `name`."""
  wav_S = np.asarray(wav, dtype=np.float64)
  if wav_S.ndim == 2 and 1 in wav_S.shape:
    wav_S = wav_S.reshape(-1)
  if wav_S.ndim != 1:
    raise BassgenError(
        f"{name}: expected a mono waveform of shape [samples], got shape {wav_S.shape}. "
        "Downmix it first (load_audio(..., mono=True) or wav.mean(axis=0)).")
  if wav_S.shape[0] < min_samples:
    raise BassgenError(
        f"{name}: {wav_S.shape[0]} samples is too short for this metric; it needs at least "
        f"{min_samples}. Give a longer excerpt.")
  if not np.all(np.isfinite(wav_S)):
    raise BassgenError(f"{name}: the waveform contains NaN or infinite samples. "
                       "Check the model output or re-export the file.")
  return wav_S


def as_pair(ref, est, *, min_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Checks a reference/estimate pair: both mono, finite and of equal length."""
  ref_S = as_mono(ref, "ref", min_samples=min_samples)
  est_S = as_mono(est, "est", min_samples=min_samples)
  if ref_S.shape != est_S.shape:
    raise BassgenError(
        f"ref has {ref_S.shape[0]} samples but est has {est_S.shape[0]}: the two signals must be "
        "aligned and of equal length. Crop both to the shorter one (e.g. est[:len(ref)]).")
  return ref_S, est_S


def check_sample_rate(sample_rate) -> int:
  """Returns a positive integer sample rate, or raises BassgenError."""
  try:
    sr = int(sample_rate)
  except (TypeError, ValueError):
    sr = 0
  if sr <= 0 or sr != sample_rate:
    raise BassgenError(f"sample_rate={sample_rate!r} is not a positive whole number of Hz. "
                       "Pass the rate the audio was loaded at (e.g. 44100).")
  return sr


def default_n_fft(sample_rate: int) -> int:
  """FFT size for analysis at `sample_rate`: ~46 ms (2048 at 44.1/48 kHz, 1024 at 16-22 kHz)."""
  if sample_rate >= 32000:
    return 2048
  if sample_rate >= 16000:
    return 1024
  return 512
