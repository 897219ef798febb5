"""Reconstruction metrics between a reference waveform and an estimate of it (autoencoder output).

All three take mono waveforms of equal length (numpy arrays or anything `np.asarray` accepts) and
return a Python float. They run on the host in float64 with numpy/librosa; they are for evaluation,
not for training losses.

- `log_mel_l1_db`: mean absolute difference of 80-band log-mel power spectrograms, in dB.
- `multi_resolution_stft_distance`: spectral convergence + log-magnitude L1, mean over FFT sizes.
- `si_sdr`: scale-invariant signal-to-distortion ratio, in dB (higher is better).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bassgen.errors import BassgenError
from bassgen.evaluation._signal import as_pair, check_sample_rate, default_n_fft

_LOG_MAG_EPS = 1e-7    # magnitude clamp before the log in the multi-resolution STFT distance
_POWER_AMIN = 1e-10    # power clamp before 10*log10 (librosa's power_to_db default)


def log_mel_l1_db(ref, est, sample_rate: int, *, n_mels: int = 80, n_fft: int | None = None,
                  hop_length: int | None = None, floor_db: float = 80.0) -> float:
  """Mean absolute difference between the log-mel spectrograms of `ref` and `est`, in dB.

  Mel power spectrograms (Hann window, centred frames, Slaney mel filters from 0 Hz to Nyquist) are
  converted to dB. Both are floored at (max dB of the REFERENCE) - `floor_db`, the same floor for
  both, so inaudibly quiet bins do not dominate and silence in `est` costs a bounded amount. The
  result is the mean over all mel bands and frames.

  Args:
    ref: reference waveform [S].
    est: estimate [S], same length.
    sample_rate: Hz.
    n_mels: number of mel bands.
    n_fft: FFT size; default ~46 ms: 2048 at >= 32 kHz, 1024 at 16-32 kHz, 512 below.
    hop_length: default n_fft // 4.
    floor_db: dynamic range kept below the reference's peak.

  Returns:
    Distance in dB; 0 for identical signals.
  """
  import librosa  # pylint: disable=g-import-not-at-top

  sr = check_sample_rate(sample_rate)
  n_fft = int(n_fft or default_n_fft(sr))
  hop_length = int(hop_length or n_fft // 4)
  if floor_db <= 0:
    raise BassgenError(f"floor_db={floor_db} must be positive (e.g. 80 dB).")
  ref_S, est_S = as_pair(ref, est, min_samples=n_fft)

  def mel_db(wav_S: np.ndarray) -> np.ndarray:
    mel_MxT = librosa.feature.melspectrogram(
        y=wav_S, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=2.0)
    return 10.0 * np.log10(np.maximum(mel_MxT, _POWER_AMIN))

  ref_db_MxT = mel_db(ref_S)
  est_db_MxT = mel_db(est_S)
  floor = ref_db_MxT.max() - float(floor_db)
  diff_MxT = np.maximum(ref_db_MxT, floor) - np.maximum(est_db_MxT, floor)
  return float(np.mean(np.abs(diff_MxT)))


def multi_resolution_stft_distance(ref, est, *,
                                   fft_sizes: Sequence[int] = (512, 1024, 2048)) -> float:
  """Multi-resolution STFT distance (as in Parallel WaveGAN, Yamamoto et al. 2020).

  For each FFT size N (Hann window of N samples, hop N // 4, centred frames) with magnitudes
  |R| and |E|:
    spectral convergence  SC  = ||  |R| - |E|  ||_F / || |R| ||_F
    log-magnitude L1      LM  = mean | ln max(|R|, 1e-7) - ln max(|E|, 1e-7) |
  The result is mean over N of (SC + LM). It is 0 for identical signals and has no unit.
  A silent (all-zero) reference makes SC undefined: the result is nan.
  """
  import librosa  # pylint: disable=g-import-not-at-top

  sizes = [int(n) for n in fft_sizes]
  if not sizes or any(n < 16 for n in sizes):
    raise BassgenError(f"fft_sizes={tuple(fft_sizes)} must be a non-empty list of FFT sizes "
                       ">= 16 (e.g. (512, 1024, 2048)).")
  ref_S, est_S = as_pair(ref, est, min_samples=max(sizes))
  total = 0.0
  for n_fft in sizes:
    kw = dict(n_fft=n_fft, hop_length=n_fft // 4, win_length=n_fft, window="hann", center=True)
    ref_mag = np.abs(librosa.stft(ref_S, **kw))
    est_mag = np.abs(librosa.stft(est_S, **kw))
    ref_norm = np.linalg.norm(ref_mag)
    if ref_norm == 0.0:
      return float("nan")
    sc = np.linalg.norm(ref_mag - est_mag) / ref_norm
    lm = np.mean(np.abs(np.log(np.maximum(ref_mag, _LOG_MAG_EPS))
                        - np.log(np.maximum(est_mag, _LOG_MAG_EPS))))
    total += sc + lm
  return float(total / len(sizes))


def si_sdr(ref, est) -> float:
  """Scale-invariant SDR in dB (Le Roux et al. 2019), higher is better.

  Both signals are made zero-mean; the target is the projection of `est` onto `ref`,
  alpha * ref with alpha = <est, ref> / ||ref||^2, and the result is
  10 log10(||alpha ref||^2 / ||est - alpha ref||^2). Identical signals (or any positive or negative
  rescaling of `ref`) give +inf. SI-SDR is undefined when either signal is silent (constant): the
  result is nan then.
  """
  ref_S, est_S = as_pair(ref, est)
  ref_S = ref_S - ref_S.mean()
  est_S = est_S - est_S.mean()
  ref_energy = float(np.dot(ref_S, ref_S))
  if ref_energy == 0.0 or not np.any(est_S):
    return float("nan")
  alpha = float(np.dot(est_S, ref_S)) / ref_energy
  target_S = alpha * ref_S
  noise_S = est_S - target_S
  target_energy = float(np.dot(target_S, target_S))
  noise_energy = float(np.dot(noise_S, noise_S))
  if noise_energy == 0.0:
    return float("inf")
  if target_energy == 0.0:
    return float("-inf")
  return float(10.0 * np.log10(target_energy / noise_energy))


def reconstruction_metrics(ref, est, sample_rate: int) -> dict[str, float]:
  """All reconstruction metrics with their default settings.

  Returns:
    {"mr_stft": multi_resolution_stft_distance, "log_mel_l1_db": log_mel_l1_db,
     "si_sdr_db": si_sdr}.
  """
  return {
      "mr_stft": multi_resolution_stft_distance(ref, est),
      "log_mel_l1_db": log_mel_l1_db(ref, est, sample_rate),
      "si_sdr_db": si_sdr(ref, est),
  }
