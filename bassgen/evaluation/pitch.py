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
import heapq
import importlib.util
import os
from collections.abc import Iterable, Sequence

import numpy as np

from bassgen import numba_cache
from bassgen.errors import BassgenError
from bassgen.evaluation._signal import as_mono, check_sample_rate

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


@dataclasses.dataclass(frozen=True)
class PitchTrack:
  """Frame-wise f0 of a monophonic line.

  Attributes:
    times: [T] frame centres in seconds, uniformly spaced from 0.
    f0_hz: [T] fundamental frequency; nan where the frame is unvoiced.
    voiced: [T] bool.
    confidence: [T] the tracker's voicing probability in [0, 1].
  """
  times: np.ndarray
  f0_hz: np.ndarray
  voiced: np.ndarray
  confidence: np.ndarray

  @property
  def hop_s(self) -> float:
    """Seconds between frames."""
    return float(self.times[1] - self.times[0]) if len(self.times) > 1 else 0.0

  @property
  def midi(self) -> np.ndarray:
    """[T] fractional MIDI pitch; nan where unvoiced."""
    return hz_to_midi(self.f0_hz)


@dataclasses.dataclass(frozen=True)
class Note:
  """One note of a monophonic line: times in seconds, MIDI pitch, MIDI velocity."""
  onset: float
  offset: float
  pitch: int
  velocity: int = 100


def hz_to_midi(f0_hz) -> np.ndarray:
  """MIDI pitch (A4 = 440 Hz = 69) of frequencies in Hz; nan for nan, zero or negative input."""
  f = np.asarray(f0_hz, dtype=np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    midi = 69.0 + 12.0 * np.log2(f / 440.0)
  return np.where(f > 0, midi, np.nan)


def midi_to_hz(midi) -> np.ndarray:
  """Frequency in Hz of (fractional) MIDI pitches."""
  return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


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
  from bassgen.data.audio import resample  # pylint: disable=g-import-not-at-top

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
  from bassgen.data.audio import resample  # pylint: disable=g-import-not-at-top

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


def f0_to_notes(track: PitchTrack, *, min_note_s: float = 0.06, max_gap_s: float = 0.04,
                split_times: Sequence[float] | None = None, snap_s: float = 0.07,
                smooth_s: float = 0.05) -> list[Note]:
  """Turns a monophonic f0 track into notes.

  Frame pitches are median-smoothed over `smooth_s` within voiced runs and rounded to semitones;
  runs of equal pitch become notes. Runs shorter than `min_note_s` join an adjacent note (the longer
  one) or are dropped when isolated; unvoiced gaps up to `max_gap_s` inside a same-pitch note are
  bridged. `split_times` (e.g. onsets detected in the audio) split a note where the same pitch is
  re-attacked, and a note onset within `snap_s` of a split time moves to it (f0 trackers see a note
  up to half a frame early or late; onset detectors are sharper).

  Returns:
    Notes sorted by onset, non-overlapping, velocity 100.
  """
  hop = track.hop_s or 0.016
  min_frames = max(1, int(round(min_note_s / hop)))
  pitch_T = _smoothed_semitones(track, max(1, int(round(smooth_s / hop)) | 1))
  segs = _runs(pitch_T)                                          # [start, end) frame index, pitch
  segs = _absorb_short(segs, min_frames)
  splits = np.sort(np.asarray(split_times if split_times is not None else [], dtype=np.float64))
  notes: list[list] = []
  for start, end, pitch in segs:
    onset = max(0.0, track.times[start] - hop / 2)
    offset = track.times[end - 1] + hop / 2
    if notes and notes[-1][2] == pitch and onset - notes[-1][1] <= max_gap_s + 1e-9 and not np.any(
        (splits > notes[-1][1] - snap_s) & (splits <= onset + snap_s)):
      notes[-1][1] = offset           # bridge a short dropout inside one note
    else:
      notes.append([onset, offset, pitch])
  out = []
  for onset, offset, pitch in notes:
    lowest = out[-1].onset + min_note_s if out else -np.inf
    near = splits[(np.abs(splits - onset) <= snap_s) & (splits < offset - min_note_s)
                  & (splits > lowest)]
    if near.size:
      dist = np.abs(near - onset)
      onset = float(near[dist <= dist.min() + 1e-3][-1])   # near-ties: the later one
    if out and out[-1].offset > onset:   # a later-snapped onset never overlaps the note before
      out[-1] = dataclasses.replace(out[-1], offset=onset)
    bounds = [onset]
    for s in splits[(splits > onset) & (splits < offset - min_note_s)]:
      if s - bounds[-1] >= min_note_s:
        bounds.append(float(s))
    bounds.append(offset)
    for a, b in zip(bounds[:-1], bounds[1:]):
      out.append(Note(onset=float(a), offset=float(b), pitch=int(pitch)))
  return out


def _smoothed_semitones(track: PitchTrack, width: int) -> np.ndarray:
  from scipy.ndimage import median_filter  # pylint: disable=g-import-not-at-top

  midi_T = track.midi
  pitch_T = np.full(len(midi_T), -1, dtype=np.int64)
  for start, end, _ in _runs(np.where(track.voiced, 0, -1)):
    run = midi_T[start:end]
    size = min(width, len(run) if len(run) % 2 else len(run) - 1)
    if size > 1:
      run = median_filter(run, size=size, mode="nearest")
    pitch_T[start:end] = np.round(run).astype(np.int64)
  return pitch_T


def _runs(values_T: np.ndarray) -> list[tuple[int, int, int]]:
  """Run-length encoding of voiced values (>= 0): [(start, end, value)], unvoiced (-1) skipped."""
  values_T = np.asarray(values_T)
  if values_T.size == 0:
    return []
  change = np.flatnonzero(np.diff(values_T)) + 1
  starts = np.concatenate([[0], change])
  ends = np.concatenate([change, [len(values_T)]])
  return [(int(s), int(e), int(values_T[s])) for s, e in zip(starts, ends) if values_T[s] >= 0]


def _absorb_short(segs, min_frames: int):
  """Merges runs shorter than `min_frames` into a touching neighbour (the longer), or drops them.

  Shortest first, with a heap over a linked list: O(n log n) for the thousands of runs of a song.
  """
  start = [s[0] for s in segs]
  end = [s[1] for s in segs]
  pitch = [s[2] for s in segs]
  n = len(segs)
  alive = [True] * n
  prev = list(range(-1, n - 1))
  nxt = list(range(1, n + 1))
  heap = [(end[i] - start[i], i) for i in range(n)]
  heapq.heapify(heap)

  def unlink(i):
    alive[i] = False
    if prev[i] >= 0:
      nxt[prev[i]] = nxt[i]
    if nxt[i] < n:
      prev[nxt[i]] = prev[i]

  def touching(a, b):   # a before b
    return 0 <= a < n and 0 <= b < n and alive[a] and alive[b] and end[a] == start[b]

  while heap:
    length, i = heapq.heappop(heap)
    if not alive[i] or length != end[i] - start[i]:
      continue
    if length >= min_frames:
      break
    cands = [k for k in (prev[i], nxt[i]) if touching(min(k, i), max(k, i))]
    unlink(i)
    if not cands:
      continue
    k = max(cands, key=lambda c: end[c] - start[c])
    start[k], end[k] = min(start[k], start[i]), max(end[k], end[i])
    for other in (prev[k], nxt[k]):   # neighbours that now touch with equal pitch become one run
      if touching(min(other, k), max(other, k)) and pitch[other] == pitch[k]:
        start[k], end[k] = min(start[k], start[other]), max(end[k], end[other])
        unlink(other)
    heapq.heappush(heap, (end[k] - start[k], k))
  return [(start[i], end[i], pitch[i]) for i in range(n) if alive[i]]


def transcribe_bass(wav, sample_rate: int, *, tracker: str = "auto",
                    min_note_s: float = 0.06) -> list[Note]:
  """Notes of a monophonic bass waveform: f0 track, split at detected onsets, velocity from level.

  Velocity maps each note's RMS level linearly from -50 dBFS (velocity 20) to 0 dBFS (127).
  """
  from bassgen.evaluation.rhythm import onset_times  # pylint: disable=g-import-not-at-top

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


def as_notes(notes) -> list[Note]:
  """Accepts Notes or dicts with start/end (or onset/offset), pitch and optional velocity."""
  out = []
  for n in notes:
    if isinstance(n, Note):
      out.append(n)
      continue
    try:
      onset = float(n["start"] if "start" in n else n["onset"])
      offset = float(n["end"] if "end" in n else n["offset"])
      out.append(Note(onset, offset, int(n["pitch"]), int(n.get("velocity", 100))))
    except (KeyError, TypeError, ValueError):
      raise BassgenError(f"note {n!r}: expected a Note or a dict with 'start', 'end' and 'pitch' "
                         "(seconds, MIDI number), as in a rendered song.json.") from None
  return out
