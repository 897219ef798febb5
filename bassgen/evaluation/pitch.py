"""Bass f0 tracking and note transcription for evaluation and for writing MIDI of generated bass
(the MIDI files themselves: `bassgen.evaluation.midi`).

Two trackers, picked by `tracker=`:
- "pyin": librosa's probabilistic YIN, always available. Audio is analysed at 16 kHz with
  2048-sample frames (128 ms: two periods of 30 Hz fit), a 256-sample hop (16 ms) and a pitch grid
  of 0.2 semitone; where YIN's interpolated f0 agrees within 60 cents it replaces the grid value
  (so intonation can be read in cents).
- "swift-f0": the swift-f0 ONNX model (the `eval` extra: `pip install .[eval]`), faster and more
  robust on real recordings. Its range starts at 46.9 Hz, above the bass's low E (41.2 Hz), so the
  audio is analysed an octave up (played at twice the speed: 8 kHz read as 16 kHz) and the f0
  halved; four runs offset by 8 ms are interleaved for an 8 ms hop.
"auto" (the default) uses swift-f0 when it is importable and pyin otherwise.

The bass range is fmin = 30 Hz (just below B0 of a five-string bass) to fmax = 400 Hz.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Iterable

import numpy as np

from bassgen import numba_cache
from bassgen.data.audio import resample
from bassgen.errors import BassgenError
# Notes, tracks and the f0-to-notes step live with the product code that writes MIDI; evaluation
# code imports them from here as before.
from bassgen.notes import (Note, PitchTrack, as_notes, f0_to_notes, hz_to_midi,  # noqa: F401
                           midi_to_hz)
from bassgen.evaluation._signal import as_mono, check_sample_rate
from bassgen.evaluation.rhythm import onset_times

BASS_FMIN_HZ = 30.0
BASS_FMAX_HZ = 400.0
TRACKERS = ("auto", "pyin", "swift-f0")
_PYIN_SR = 16000
_PYIN_FRAME = 2048
_PYIN_HOP = 256
_SWIFT_SR = 16000
_SWIFT_MIN_HZ = 46.875
_SWIFT_MAX_HZ = 2093.75
_SWIFT_SHIFTS = 4
_swift_detector = None


def swift_f0_available() -> bool:
  """Whether the swift-f0 tracker (the `eval` extra) can be imported."""
  try:
    return (importlib.util.find_spec("swift_f0") is not None
            and importlib.util.find_spec("onnxruntime") is not None)
  except (ImportError, ValueError):   # a broken or blocked install counts as absent
    return False


def resolve_tracker(tracker: str = "auto") -> str:
  """Returns "pyin" or "swift-f0" for a `tracker` option, or raises BassgenError."""
  if tracker not in TRACKERS:
    raise BassgenError(f"tracker={tracker!r} is unknown. Choose one of {', '.join(TRACKERS)}.")
  if tracker == "auto":
    return "swift-f0" if swift_f0_available() else "pyin"
  if tracker == "swift-f0" and not swift_f0_available():
    raise BassgenError("tracker='swift-f0' needs the swift-f0 and onnxruntime packages. Install "
                       "them with `pip install .[eval]`, or use tracker='pyin'.")
  return tracker


def track_pitch(wav, sample_rate: int, *, tracker: str = "auto", fmin: float = BASS_FMIN_HZ,
                fmax: float = BASS_FMAX_HZ) -> PitchTrack:
  """Tracks the f0 of a monophonic (bass) waveform.

  Args:
    wav: mono waveform [S].
    sample_rate: Hz.
    tracker: "auto", "pyin" or "swift-f0" (see the module docstring).
    fmin, fmax: search range in Hz.

  Returns:
    A PitchTrack; frame i is centred at times[i].
  """
  sr = check_sample_rate(sample_rate)
  wav_S = as_mono(wav, "wav", min_samples=1)
  if not 0 < fmin < fmax:
    raise BassgenError(f"fmin={fmin}, fmax={fmax}: need 0 < fmin < fmax (bass: 30 to 400 Hz).")
  if resolve_tracker(tracker) == "pyin":
    return _track_pyin(wav_S, sr, fmin, fmax)
  return _track_swift(wav_S, sr, fmin, fmax)


def _track_pyin(wav_S: np.ndarray, sr: int, fmin: float, fmax: float) -> PitchTrack:
  import librosa  # pylint: disable=g-import-not-at-top

  if _PYIN_SR / fmin > _PYIN_FRAME // 2:
    raise BassgenError(f"fmin={fmin} Hz is too low for pyin's {_PYIN_FRAME}-sample frames; "
                       f"use fmin >= {2 * _PYIN_SR / _PYIN_FRAME:.1f} Hz.")
  x_S = resample(wav_S.astype(np.float32), sr, _PYIN_SR).astype(np.float64)
  numba_cache.warm_up()
  if len(x_S) < _PYIN_FRAME:   # pyin needs one full frame; silence around a short clip is harmless
    x_S = np.pad(x_S, (0, _PYIN_FRAME - len(x_S)))
  f0, voiced, prob = librosa.pyin(
      x_S, fmin=fmin, fmax=min(fmax, _PYIN_SR / 4), sr=_PYIN_SR, frame_length=_PYIN_FRAME,
      hop_length=_PYIN_HOP, resolution=0.2, center=True)
  # pyin's f0 sits on its 0.2-semitone grid; YIN's parabolic interpolation gives a continuous f0.
  # Where the two agree within 60 cents, the finer one is kept (intonation needs cents).
  fine = librosa.yin(x_S, fmin=fmin, fmax=min(fmax, _PYIN_SR / 4), sr=_PYIN_SR,
                     frame_length=_PYIN_FRAME, hop_length=_PYIN_HOP, center=True)[: len(f0)]
  with np.errstate(invalid="ignore", divide="ignore"):
    close = np.abs(1200.0 * np.log2(fine / f0)) < 60.0
  f0 = np.where(np.isfinite(f0) & close, fine, f0)
  n_frames = 1 + len(wav_S) * _PYIN_SR // (sr * _PYIN_HOP)
  return _make_track(np.arange(len(f0)) * _PYIN_HOP / _PYIN_SR, f0, voiced, prob, n_frames)


def _track_swift(wav_S: np.ndarray, sr: int, fmin: float, fmax: float) -> PitchTrack:
  global _swift_detector
  import swift_f0  # pylint: disable=g-import-not-at-top

  if 2 * fmax < _SWIFT_MIN_HZ * 1.05 or 2 * fmin > _SWIFT_MAX_HZ:
    raise BassgenError(f"fmin={fmin}, fmax={fmax}: swift-f0 covers {_SWIFT_MIN_HZ / 2:.1f} to "
                       f"{_SWIFT_MAX_HZ / 2:.0f} Hz here; pick a range inside it or "
                       "tracker='pyin'.")
  if _swift_detector is None:
    _swift_detector = swift_f0.SwiftF0(threads=min(4, os.cpu_count() or 1), spin=False)
  # Resample to 8 kHz and present it as 16 kHz: every frequency doubles and time runs twice as
  # fast, so a model frame (256 samples) spans 32 ms of real time. Runs on the signal advanced by
  # 0, 8, 16 and 24 ms are interleaved to give an 8 ms hop.
  x_S = resample(wav_S.astype(np.float32), sr, _SWIFT_SR // 2)
  step = 256 // _SWIFT_SHIFTS
  n_frames = 1 + len(x_S) // step
  x_S = np.pad(x_S, (0, 2 * 256))   # so that every shifted run reaches the end
  runs = []
  for j in range(_SWIFT_SHIFTS):
    part = x_S[j * step:]
    r = _swift_detector.detect(part, _SWIFT_SR, fmin=max(2 * fmin, _SWIFT_MIN_HZ),
                               fmax=min(2 * fmax, _SWIFT_MAX_HZ))
    runs.append((r.pitch_hz / 2.0, np.clip(r.confidence, 0.0, 1.0)))
  n = min(len(p) for p, _ in runs)
  f0 = np.stack([p[:n] for p, _ in runs], axis=1).reshape(-1)       # frame 4i + j
  conf = np.stack([c[:n] for _, c in runs], axis=1).reshape(-1)
  times = np.arange(len(f0)) * step / (_SWIFT_SR // 2)
  return _make_track(times, f0, conf >= 0.5, conf, n_frames)


def _make_track(times, f0, voiced, conf, n_frames: int | None) -> PitchTrack:
  f0 = np.asarray(f0, dtype=np.float64)
  voiced = np.asarray(voiced, dtype=bool) & np.isfinite(f0) & (f0 > 0)
  times = np.asarray(times, dtype=np.float64)
  conf = np.nan_to_num(np.asarray(conf, dtype=np.float64))
  if n_frames is not None:   # drop frames that only cover padding
    times, f0, voiced, conf = (a[:max(1, n_frames)] for a in (times, f0, voiced, conf))
  return PitchTrack(times=times, f0_hz=np.where(voiced, f0, np.nan), voiced=voiced, confidence=conf)


def transcribe_bass(wav, sample_rate: int, *, tracker: str = "auto",
                    min_note_s: float = 0.06) -> list[Note]:
  """Notes of a monophonic bass waveform: f0 track, split at detected onsets, velocity from level.

  Velocity maps each note's RMS level linearly from -50 dBFS (velocity 20) to 0 dBFS (127).
  """

  sr = check_sample_rate(sample_rate)
  wav_S = as_mono(wav, "wav")
  track = track_pitch(wav_S, sr, tracker=tracker)
  notes = f0_to_notes(track, min_note_s=min_note_s,
                      split_times=onset_times(wav_S, sr, fmax=BASS_FMAX_HZ * 4))
  out = []
  for n in notes:
    seg = wav_S[int(n.onset * sr):max(int(n.offset * sr), int(n.onset * sr) + 1)]
    db = 20 * np.log10(max(np.sqrt(np.mean(seg ** 2)), 1e-6))
    out.append(dataclasses.replace(n, velocity=int(np.clip(round(127 + db * 107 / 50), 1, 127))))
  return out


def notes_to_track(notes: Iterable[Note], times) -> PitchTrack:
  """Frame-wise reference track from notes (e.g. a known bass part) at frame centres `times`.

  Where notes overlap, the later onset wins (a monophonic line).
  """
  times = np.asarray(times, dtype=np.float64)
  f0 = np.full(len(times), np.nan)
  for n in sorted(as_notes(notes), key=lambda n: n.onset):
    f0[(times >= n.onset) & (times < n.offset)] = midi_to_hz(n.pitch)
  voiced = np.isfinite(f0)
  return PitchTrack(times=times, f0_hz=f0, voiced=voiced, confidence=voiced.astype(np.float64))
