"""Distribution metric: Fréchet distance between two sets of recordings in an embedding space.

The embedding is pluggable. The default, "stats", is defined here and needs no download: for each
2 s window (1 s hop) it concatenates the mean and standard deviation of a 32-band log-mel spectrum,
the mean chroma, and the mean and standard deviation of the onset strength (78 numbers). A user may
instead give their own embedding model as "package.module:function" or "path/to/file.py:function";
the function takes (waveform float32 [S], sample_rate) and returns one vector [D] or one per window
[N, D]. If the function has a `sample_rate` attribute, audio is resampled to that rate first.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
from collections.abc import Callable, Iterable

import numpy as np

from bassgen.data.audio import load_audio, resample
from bassgen.errors import BassgenError
from bassgen.evaluation._signal import as_mono, check_sample_rate, default_n_fft
from bassgen.evaluation.frechet import frechet_distance, gaussian_stats

Embedding = Callable[[np.ndarray, int], np.ndarray]
DEFAULT_EMBEDDING = "stats"
WINDOW_S = 2.0
HOP_S = 1.0
_N_MELS = 32


def stats_embedding(wav, sample_rate: int) -> np.ndarray:
  """[N, 78] feature statistics of each 2 s window (1 s hop) of `wav`; one window if shorter.

  Per window: mean and std over frames of 32 log-mel bands (dB, up to 8 kHz), the mean of the 12
  chroma bins, and mean and std of librosa's onset strength.
  """
  import librosa  # pylint: disable=g-import-not-at-top

  sr = check_sample_rate(sample_rate)
  wav_S = as_mono(wav, "wav").astype(np.float32)
  n_fft = default_n_fft(sr)
  hop = n_fft // 4
  if len(wav_S) < n_fft:
    wav_S = np.pad(wav_S, (0, n_fft - len(wav_S)))
  power_FxT = np.abs(librosa.stft(wav_S, n_fft=n_fft, hop_length=hop)) ** 2
  mel_MxT = librosa.feature.melspectrogram(S=power_FxT, sr=sr, n_mels=_N_MELS,
                                           fmax=min(8000.0, sr / 2))
  logmel_MxT = 10 * np.log10(np.maximum(mel_MxT, 1e-10))
  chroma_CxT = librosa.feature.chroma_stft(S=power_FxT, sr=sr, n_chroma=12)
  onset_T = librosa.onset.onset_strength(S=librosa.power_to_db(mel_MxT), sr=sr)
  n_t = min(logmel_MxT.shape[1], chroma_CxT.shape[1], len(onset_T))
  win = max(1, int(round(WINDOW_S * sr / hop)))
  step = max(1, int(round(HOP_S * sr / hop)))
  starts = range(0, max(1, n_t - win + 1), step)
  rows = []
  for s in starts:
    m = logmel_MxT[:, s:s + win]
    o = onset_T[s:s + win]
    c = chroma_CxT[:, s:s + win]
    rows.append(np.concatenate([m.mean(axis=1), m.std(axis=1), c.mean(axis=1),
                                [o.mean(), o.std()]]))
  return np.stack(rows).astype(np.float64)


def load_embedding(spec: str | Embedding | None = DEFAULT_EMBEDDING) -> Embedding:
  """The embedding for "stats" (or None), a callable, "module:function" or "file.py:function"."""
  if spec is None or spec == DEFAULT_EMBEDDING:
    return stats_embedding
  if callable(spec):
    return spec
  spec = str(spec)
  target, sep, attr = spec.rpartition(":")
  if not sep or not target or not attr:
    raise BassgenError(f"embedding {spec!r}: expected 'stats', 'package.module:function' or "
                       "'path/to/file.py:function'.")
  if target.endswith(".py") or os.sep in target or "/" in target:
    path = pathlib.Path(target)
    if not path.is_file():
      raise BassgenError(f"{path}: no such Python file for the embedding. Check the path in "
                         f"{spec!r}.")
    mod_spec = importlib.util.spec_from_file_location(f"bassgen_user_embedding_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
      mod_spec.loader.exec_module(module)
    except Exception as e:
      raise BassgenError(f"{path}: importing the embedding file failed ({type(e).__name__}: {e}). "
                         "Fix the file or its imports.") from None
  else:
    try:
      module = importlib.import_module(target)
    except ImportError as e:
      raise BassgenError(f"embedding {spec!r}: cannot import module {target!r} ({e}). Install it "
                         "or give 'path/to/file.py:function'.") from None
  fn = getattr(module, attr, None)
  if not callable(fn):
    raise BassgenError(f"embedding {spec!r}: {target} has no function {attr!r}. Check the name "
                       "after the colon.")
  return fn


def embed(items: Iterable, sample_rate: int, embedding: str | Embedding | None = DEFAULT_EMBEDDING,
          *, name: str = "set") -> np.ndarray:
  """Embeds each item (a mono waveform at `sample_rate`, or an audio file path) and stacks all
  vectors into [N, D]."""

  sr = check_sample_rate(sample_rate)
  fn = load_embedding(embedding)
  fn_sr = getattr(fn, "sample_rate", None)
  label = getattr(fn, "__qualname__", repr(fn)) if not isinstance(embedding, str) else embedding
  rows, dim = [], None
  for i, item in enumerate(items):
    if isinstance(item, (str, os.PathLike)):
      wav_S, _ = load_audio(item, sample_rate=sr)
      where = str(item)
    else:
      wav_S = as_mono(item, f"{name}[{i}]").astype(np.float32)
      where = f"{name}[{i}]"
    run_sr = sr
    if fn_sr is not None and int(fn_sr) != sr:
      wav_S, run_sr = resample(wav_S, sr, int(fn_sr)), int(fn_sr)
    out = np.asarray(fn(np.asarray(wav_S, np.float32), run_sr), dtype=np.float64)
    out = out[None, :] if out.ndim == 1 else out
    if out.ndim != 2 or out.shape[0] == 0 or not np.all(np.isfinite(out)) or (
        dim is not None and out.shape[1] != dim):
      raise BassgenError(
          f"embedding {label!r} on {where}: returned shape {out.shape}"
          f"{'' if np.all(np.isfinite(out)) else ' with NaN/Inf'}; expected finite [D] or [N, D] "
          f"with the same D for every item{f' (D={dim})' if dim else ''}. Fix the embedding "
          "function.")
    dim = out.shape[1]
    rows.append(out)
  if not rows:
    raise BassgenError(f"{name}: no audio to embed. Give at least one recording.")
  return np.concatenate(rows, axis=0)


def frechet_audio_distance(set_a: Iterable, set_b: Iterable, sample_rate: int, *,
                           embedding: str | Embedding | None = DEFAULT_EMBEDDING) -> float:
  """Fréchet distance between Gaussians fitted to the embeddings of two sets of recordings.

  Items are mono waveforms at `sample_rate` or audio file paths. Each set must give at least 2
  embedding vectors (the default gives one per second of audio). 0 for identical sets.
  """
  emb_a = embed(set_a, sample_rate, embedding, name="set_a")
  emb_b = embed(set_b, sample_rate, embedding, name="set_b")
  if emb_a.shape[1] != emb_b.shape[1]:
    raise BassgenError(f"the two sets embed to different sizes ({emb_a.shape[1]} vs "
                       f"{emb_b.shape[1]}). Use an embedding with a fixed output size.")
  return frechet_distance(*gaussian_stats(emb_a, "set_a"), *gaussian_stats(emb_b, "set_b"))
