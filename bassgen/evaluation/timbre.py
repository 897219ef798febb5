"""Timbre metric: Fréchet distance between the MFCC distributions of two (bass) recordings.

Each recording is cut into frames (46-64 ms window: 2048 samples at >= 32 kHz, 1024 at 16-32 kHz;
quarter hop); frames 60 dB or more below the
recording's loudest frame are left out. Each frame gives 13 MFCCs of a 40-band log-mel spectrum
(up to 8 kHz, so the number does not depend on the sample rate above 16 kHz). So few bands and
coefficients describe the spectral envelope and smooth over single harmonics, so the notes played
matter far less than the sound (on synthetic 8 s lines, a change of brightness or decay moves it
2.5 to 5 times more than playing other random notes with the same sound). c0, the overall level,
is dropped by default: a louder copy of the same sound has the same timbre. A Gaussian is fitted to
each recording's frames and the Fréchet distance between the two is the result.
"""
from __future__ import annotations

import numpy as np

from bassgen.evaluation._signal import as_mono, check_sample_rate, default_n_fft
from bassgen.evaluation.frechet import frechet_distance, gaussian_stats

N_MFCC = 13
N_MELS = 40
FMAX_HZ = 8000.0
SILENCE_DB = -60.0


def mfcc_frames(wav, sample_rate: int, *, n_mfcc: int = N_MFCC, include_c0: bool = False,
                silence_db: float = SILENCE_DB) -> np.ndarray:
  """[N, D] MFCC vectors of the frames of `wav` that are within `silence_db` of its loudest frame.

  D is n_mfcc - 1 without c0, n_mfcc with it. Returns shape [0, D] for silence.
  """
  import librosa  # pylint: disable=g-import-not-at-top

  sr = check_sample_rate(sample_rate)
  wav_S = as_mono(wav, "wav").astype(np.float32)
  n_fft = default_n_fft(sr)
  hop = n_fft // 4
  dim = n_mfcc if include_c0 else n_mfcc - 1
  if not np.any(wav_S):
    return np.zeros((0, dim))
  mel_MxF = librosa.feature.melspectrogram(y=wav_S, sr=sr, n_fft=n_fft, hop_length=hop,
                                           n_mels=N_MELS, fmax=min(FMAX_HZ, sr / 2))
  mfcc_CxF = librosa.feature.mfcc(S=librosa.power_to_db(mel_MxF, top_db=80.0), n_mfcc=n_mfcc)
  rms_F = librosa.feature.rms(y=wav_S, frame_length=n_fft, hop_length=hop)[0]
  n = min(len(rms_F), mfcc_CxF.shape[1])
  level_F = 20 * np.log10(np.maximum(rms_F[:n], 1e-10))
  keep_F = level_F > level_F.max() + silence_db
  feats_NxC = mfcc_CxF[:, :n][:, keep_F].T.astype(np.float64)
  return feats_NxC if include_c0 else feats_NxC[:, 1:]


def timbre_distance(est, ref, sample_rate: int, *, n_mfcc: int = N_MFCC,
                    include_c0: bool = False) -> float:
  """Fréchet distance between Gaussians of MFCC frames of `est` and `ref` (see the module doc).

  The two recordings may differ in length and content. 0 for identical recordings; nan when either
  has fewer than 2 non-silent frames (e.g. a silent estimate).
  """
  a = mfcc_frames(as_mono(est, "est"), sample_rate, n_mfcc=n_mfcc, include_c0=include_c0)
  b = mfcc_frames(as_mono(ref, "ref"), sample_rate, n_mfcc=n_mfcc, include_c0=include_c0)
  if len(a) < 2 or len(b) < 2:
    return float("nan")
  return frechet_distance(*gaussian_stats(a, "est"), *gaussian_stats(b, "ref"))


def timbre_metrics(bass, reference, sample_rate: int) -> dict[str, float]:
  """{"timbre_fd": timbre_distance(bass, reference)}, e.g. generated bass vs the style reference."""
  return {"timbre_fd": timbre_distance(bass, reference, sample_rate)}
