"""Harmony metrics: does the bass play pitch classes that fit the mix, or those of a known bass?

- `chord_tone_share`: the share of voiced bass frames whose pitch class is among the `top_k` (3)
  strongest chroma bins of the mix at that time. The mix chroma is librosa's constant-Q chroma,
  averaged over `smooth_s` (0.15 s) so a passing melody note weighs less than the chord.
- `pitch_class_accuracy`: mir_eval's raw chroma accuracy (and raw pitch accuracy) of the bass's f0
  against a known bass: the share of the reference's voiced frames where the estimate is voiced and
  within 50 cents of the right pitch class (of the right pitch).
"""
from __future__ import annotations

import warnings

import numpy as np

from bassgen import numba_cache
from bassgen.errors import BassgenError
from bassgen.evaluation._signal import as_mono, check_sample_rate, default_n_fft
from bassgen.evaluation.pitch import PitchTrack, as_notes, notes_to_track, track_pitch

TOP_K = 3
_CHROMA_FMIN_HZ = 32.70   # C1
_SILENT_DB = -60.0        # mix frames this far below the mix's peak level carry no harmony


def mix_chroma(mix, sample_rate: int, times, *, smooth_s: float = 0.15) -> np.ndarray:
  """[12, T] chroma of `mix` (pitch class 0 = C) at the frame times `times` (seconds).

  Each column is scaled to max 1; columns where the mix is silent (60 dB below its loudest
  frame) are all zero.
  """
  import librosa  # pylint: disable=g-import-not-at-top

  sr = check_sample_rate(sample_rate)
  mix_S = as_mono(mix, "mix").astype(np.float32)
  times = np.asarray(times, dtype=np.float64)
  hop = default_n_fft(sr) // 4
  n_octaves = int(min(7, np.floor(np.log2(sr / 2 / _CHROMA_FMIN_HZ))))
  if not np.any(mix_S):
    return np.zeros((12, len(times)))
  numba_cache.warm_up()
  with warnings.catch_warnings():   # the CQT's low octaves see a decimated short clip: harmless
    warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
    chroma_CxF = librosa.feature.chroma_cqt(y=mix_S, sr=sr, hop_length=hop, fmin=_CHROMA_FMIN_HZ,
                                            n_octaves=n_octaves, norm=None)
  width = max(1, int(round(smooth_s * sr / hop)))
  if width > 1:
    kernel = np.ones(width) / width
    chroma_CxF = np.stack([np.convolve(c, kernel, mode="same") for c in chroma_CxF])
  rms_F = librosa.feature.rms(y=mix_S, frame_length=default_n_fft(sr), hop_length=hop)[0]
  n = min(chroma_CxF.shape[1], len(rms_F))
  chroma_CxF, rms_F = chroma_CxF[:, :n], rms_F[:n]
  loud_F = 20 * np.log10(np.maximum(rms_F, 1e-10)) > 20 * np.log10(rms_F.max()) + _SILENT_DB
  peak_F = chroma_CxF.max(axis=0)
  chroma_CxF = np.where(loud_F & (peak_F > 0), chroma_CxF / np.maximum(peak_F, 1e-12), 0.0)
  idx = np.clip(np.round(times * sr / hop).astype(np.int64), 0, n - 1)
  return chroma_CxF[:, idx]


def chord_tone_share(bass_track: PitchTrack, chroma_CxT: np.ndarray, *,
                     top_k: int = TOP_K) -> float:
  """Share of voiced bass frames whose pitch class is among the `top_k` strongest chroma bins.

  Frames where the mix is silent (all-zero chroma) are left out. Returns nan when no voiced bass
  frame falls where the mix sounds (a silent bass has no harmony to score).
  """
  if not 1 <= top_k <= 12:
    raise BassgenError(f"top_k={top_k}: the number of chroma bins must be between 1 and 12.")
  chroma_CxT = np.asarray(chroma_CxT, dtype=np.float64)
  if chroma_CxT.shape != (12, len(bass_track.times)):
    raise ValueError(f"chroma shape {chroma_CxT.shape} != (12, {len(bass_track.times)})")
  use_T = bass_track.voiced & (chroma_CxT.max(axis=0) > 0)
  if not np.any(use_T):
    return float("nan")
  pc_T = np.mod(np.round(bass_track.midi[use_T]).astype(np.int64), 12)
  chroma = chroma_CxT[:, use_T]
  kth_T = np.sort(chroma, axis=0)[12 - top_k]          # k-th largest value per frame
  hits = chroma[pc_T, np.arange(len(pc_T))] >= kth_T
  return float(np.mean(hits))


def pitch_class_accuracy(est_track: PitchTrack, ref_track: PitchTrack) -> dict[str, float]:
  """mir_eval raw chroma and raw pitch accuracy of `est_track` against `ref_track`.

  Returns:
    {"pitch_class_accuracy": ..., "pitch_accuracy": ...}; nan when the reference is never voiced.
  """
  import mir_eval  # pylint: disable=g-import-not-at-top

  if not np.any(ref_track.voiced):
    return {"pitch_class_accuracy": float("nan"), "pitch_accuracy": float("nan")}
  ref_f = np.where(ref_track.voiced, ref_track.f0_hz, 0.0)
  est_f = np.where(est_track.voiced, est_track.f0_hz, 0.0)
  with warnings.catch_warnings():   # "no voiced frames" in the estimate is a valid case: 0
    warnings.filterwarnings("ignore", message=".*has no voiced frames", category=UserWarning)
    ref_v, ref_c, est_v, est_c = mir_eval.melody.to_cent_voicing(
        ref_track.times, ref_f, est_track.times, est_f)
    return {
        "pitch_class_accuracy": float(
            mir_eval.melody.raw_chroma_accuracy(ref_v, ref_c, est_v, est_c)),
        "pitch_accuracy": float(mir_eval.melody.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c)),
    }


def harmony_metrics(bass, sample_rate: int, *, mix=None, ref_bass=None, ref_notes=None,
                    ref_track: PitchTrack | None = None, tracker: str = "auto",
                    top_k: int = TOP_K, bass_track: PitchTrack | None = None
                    ) -> dict[str, float]:
  """Harmony metrics of a (generated) bass waveform.

  Args:
    bass: the bass to score [S].
    sample_rate: Hz, shared by all waveforms.
    mix: the mix it was generated for; gives "chord_tone_share".
    ref_bass: a known bass for the same mix (waveform), or
    ref_notes: its notes (Notes or song.json dicts); either gives "pitch_class_accuracy" and
      "pitch_accuracy".
    ref_track: or the known bass's pitch track, already tracked (`track_pitch(ref_bass)`), so that
      scoring several basses against one reference tracks it once.
    tracker: f0 tracker, see `bassgen.evaluation.pitch`.
    top_k: number of strongest mix chroma bins that count as fitting.
    bass_track: the bass's pitch track when the caller has already tracked it.

  Returns:
    The metrics above plus "bass_voiced_fraction" (share of frames where the bass sounds a pitch).
  """
  sr = check_sample_rate(sample_rate)
  if sum(r is not None for r in (ref_bass, ref_notes, ref_track)) > 1:
    raise BassgenError("give one of ref_bass (audio), ref_notes (MIDI/JSON notes) or ref_track "
                       "(its pitch track), not several.")
  track = bass_track if bass_track is not None else track_pitch(as_mono(bass, "bass"), sr,
                                                                tracker=tracker)
  out = {"bass_voiced_fraction": float(np.mean(track.voiced))}
  if mix is not None:
    mix_S = as_mono(mix, "mix")
    out["chord_tone_share"] = chord_tone_share(track, mix_chroma(mix_S, sr, track.times),
                                               top_k=top_k)
  if ref_bass is not None:
    ref_track = track_pitch(as_mono(ref_bass, "ref_bass"), sr, tracker=tracker)
  if ref_track is not None:
    out.update(pitch_class_accuracy(track, ref_track))
  elif ref_notes is not None:
    out.update(pitch_class_accuracy(track, notes_to_track(as_notes(ref_notes), track.times)))
  return out
