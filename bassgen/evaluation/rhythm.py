"""Rhythm metrics: do the bass's onsets fall on the mix's onsets (or beats), or on a known bass's?

Onsets are detected with librosa (spectral flux of a mel spectrogram, ~6-8 ms hop, librosa's
time-based peak picking); a peak where the level then drops by more than 6 dB (50 ms after vs 50 ms
before) is the end of a note, not an onset, and is dropped. Matching is mir_eval's onset F-measure:
each reference onset matches at most one estimated onset within +-`window` seconds (50 ms default).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from bassgen import numba_cache
from bassgen.errors import BassgenError
from bassgen.evaluation._signal import as_mono, check_sample_rate, default_n_fft
from bassgen.notes import as_notes

ONSET_WINDOW_S = 0.05
MIX_REFERENCES = ("onsets", "beats")
_LEVEL_SPAN_S = 0.05
_MAX_DROP_POWER = 10 ** (-6 / 10)


def _hop(sr: int) -> int:
  return default_n_fft(sr) // 8   # 256 at 44.1 kHz (5.8 ms), 128 at 16 kHz (8 ms)


def onset_times(wav, sample_rate: int, *, fmax: float | None = None,
                backtrack: bool = False) -> np.ndarray:
  """Onset times in seconds of a waveform, sorted; empty for silence.

  Args:
    wav: mono waveform [S].
    sample_rate: Hz.
    fmax: highest frequency of the onset-strength mel spectrogram (e.g. ~1.6 kHz for a bass stem so
      that fret noise and hiss matter less); None for the full band.
    backtrack: move each onset back to the preceding energy minimum.
  """
  import librosa  # pylint: disable=g-import-not-at-top

  sr = check_sample_rate(sample_rate)
  wav_S = as_mono(wav, "wav").astype(np.float32)
  if not np.any(wav_S):
    return np.zeros(0)
  n_fft = default_n_fft(sr)
  hop = _hop(sr)
  kw = {} if fmax is None else {"fmax": min(float(fmax), sr / 2)}
  numba_cache.warm_up()
  env = librosa.onset.onset_strength(y=wav_S, sr=sr, n_fft=n_fft, hop_length=hop, **kw)
  frames = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=hop,
                                      backtrack=False, units="frames")
  frames = frames[_level_does_not_drop(wav_S, frames, hop, sr)]
  if backtrack and frames.size:
    frames = librosa.onset.onset_backtrack(frames, env)
  return np.sort(librosa.frames_to_time(frames, sr=sr, hop_length=hop)).astype(np.float64)


def _level_does_not_drop(wav_S: np.ndarray, frames: np.ndarray, hop: int, sr: int) -> np.ndarray:
  """False for "onsets" where the level falls by > 6 dB: the end of a note, not a new one."""
  span = int(_LEVEL_SPAN_S * sr)
  keep = np.ones(len(frames), dtype=bool)
  for i, f in enumerate(frames):
    t = int(f) * hop
    before = wav_S[max(0, t - span):t]
    after = wav_S[t:t + span]
    if before.size and after.size:
      keep[i] = np.mean(after ** 2) >= np.mean(before ** 2) * _MAX_DROP_POWER
  return keep


def beat_times(wav, sample_rate: int) -> np.ndarray:
  """Beat times in seconds from librosa's dynamic-programming beat tracker."""
  import librosa  # pylint: disable=g-import-not-at-top

  sr = check_sample_rate(sample_rate)
  wav_S = as_mono(wav, "wav").astype(np.float32)
  if not np.any(wav_S):
    return np.zeros(0)
  numba_cache.warm_up()
  _, beats = librosa.beat.beat_track(y=wav_S, sr=sr, hop_length=_hop(sr), units="time")
  return np.sort(np.asarray(beats, dtype=np.float64))


def onset_f_measure(ref_onsets: Iterable[float], est_onsets: Iterable[float], *,
                    window: float = ONSET_WINDOW_S) -> dict[str, float]:
  """mir_eval onset F-measure, precision and recall of `est_onsets` against `ref_onsets` (seconds).

  If only one side is empty all three are 0; if both are empty (nothing to match) they are nan.
  """
  import mir_eval  # pylint: disable=g-import-not-at-top

  ref = np.sort(np.asarray(list(ref_onsets), dtype=np.float64))
  est = np.sort(np.asarray(list(est_onsets), dtype=np.float64))
  if window <= 0:
    raise BassgenError(f"window={window}: the onset tolerance must be positive (e.g. 0.05 s).")
  if ref.size == 0 and est.size == 0:
    nan = float("nan")
    return {"f_measure": nan, "precision": nan, "recall": nan}
  if ref.size == 0 or est.size == 0:
    return {"f_measure": 0.0, "precision": 0.0, "recall": 0.0}
  f, p, r = mir_eval.onset.f_measure(ref, est, window=window)
  return {"f_measure": float(f), "precision": float(p), "recall": float(r)}


def bass_onsets(bass, sample_rate: int) -> np.ndarray:
  """Onsets of a bass stem: onset strength restricted to the band below 1.6 kHz."""
  return onset_times(bass, sample_rate, fmax=1600.0)


def rhythm_metrics(bass, sample_rate: int, *, mix=None, ref_bass=None, ref_notes=None,
                   window: float = ONSET_WINDOW_S, mix_reference: str = "onsets",
                   mix_onsets=None, ref_onsets=None) -> dict[str, float]:
  """Onset agreement of a (generated) bass with its mix and, where known, with the true bass.

  Args:
    bass: the bass waveform to score [S].
    sample_rate: Hz, shared by all waveforms.
    mix: the mix the bass was generated for; scores bass onsets against the mix's onsets
      (`mix_reference="onsets"`) or beats (`"beats"`).
    ref_bass: waveform of a known bass for the same mix; its detected onsets are the reference.
    ref_notes: known bass notes instead (Notes or song.json dicts); their onsets are the reference.
    mix_onsets, ref_onsets: those references already computed (`mix_reference_times(mix)`,
      `bass_onsets(ref_bass)`, seconds), in place of `mix` / `ref_bass`, so that scoring several
      basses against one song analyses the song once.

  Returns:
    "onset_f_mix", "onset_precision_mix", "onset_recall_mix" when `mix` is given;
    "onset_f_ref", "onset_precision_ref", "onset_recall_ref" when `ref_bass` or `ref_notes` is.
  """
  sr = check_sample_rate(sample_rate)
  if sum(r is not None for r in (ref_bass, ref_notes, ref_onsets)) > 1:
    raise BassgenError("give one of ref_bass (audio), ref_notes (MIDI/JSON notes) or ref_onsets, "
                       "not several.")
  if mix is not None and mix_onsets is not None:
    raise BassgenError("give either mix (audio) or mix_onsets, not both.")
  est = bass_onsets(as_mono(bass, "bass"), sr)
  out: dict[str, float] = {}
  if mix is not None:
    mix_onsets = mix_reference_times(mix, sr, mix_reference)
  if mix_onsets is not None:
    out.update({f"onset_{k.split('_')[0]}_mix": v
                for k, v in onset_f_measure(mix_onsets, est, window=window).items()})
  if ref_bass is not None:
    ref_onsets = bass_onsets(as_mono(ref_bass, "ref_bass"), sr)
  elif ref_notes is not None:
    ref_onsets = [n.onset for n in as_notes(ref_notes)]
  if ref_onsets is not None:
    out.update({f"onset_{k.split('_')[0]}_ref": v
                for k, v in onset_f_measure(ref_onsets, est, window=window).items()})
  return out


def mix_reference_times(mix, sample_rate: int, mix_reference: str = "onsets") -> np.ndarray:
  """What a bass's onsets are matched against in a mix: its onsets or its beats (seconds)."""
  if mix_reference not in MIX_REFERENCES:
    raise BassgenError(f"mix_reference={mix_reference!r} is unknown; use 'onsets' or 'beats'.")
  mix_S = as_mono(mix, "mix")
  return onset_times(mix_S, sample_rate) if mix_reference == "onsets" else beat_times(mix_S,
                                                                                      sample_rate)
