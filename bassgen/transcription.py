"""The generated bass's pitch, level and notes in one fast pass (for its MIDI, picture and page).

`track_bass` runs YIN (de Cheveigné and Kawahara 2002) on the bass resampled to 8 kHz: a 64 ms
integration window (two periods of 30 Hz), lags up to 1/30 s, a 16 ms hop, the difference function
from one FFT correlation per frame, the cumulative-mean-normalised difference with an absolute
threshold, and parabolic interpolation of the lag (cents, not semitone steps). Frames are analysed
in blocks of `block_frames`, each frame from its own samples only, so blocks of any size give the
frames of one pass, and memory holds one block of frames whatever the song's length. The frame
level (RMS of the window) comes from the same pass; a frame is voiced where the normalised
difference dips below the threshold and the level is within 45 dB of the song's loudest frame.

`transcribe` turns a track into notes: `f0_to_notes` split where the level rises sharply (a
re-attack of the same pitch), with velocity from each note's level. About 0.1 s per minute of bass
on one core; no numba, no model download.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bassgen.data.audio import resample
from bassgen.notes import Note, PitchTrack, f0_to_notes

TRACK_SR = 8000
FMIN_HZ = 30.0
FMAX_HZ = 400.0
_WINDOW = 512             # integration window W (64 ms)
_HOP = 128                # 16 ms
_TAU_MIN = int(TRACK_SR // FMAX_HZ)            # 20
_TAU_MAX = int(np.ceil(TRACK_SR / FMIN_HZ))    # 267
_SPAN = _WINDOW + _TAU_MAX                     # samples each frame reads
_NFFT = 1024                                   # >= _SPAN: the correlation does not wrap
_THRESHOLD = 0.2
_RANGE_DB = 45.0          # voiced frames are at most this far below the loudest frame
_FLOOR_DB = -80.0
_ONSET_RISE_DB = 6.0      # a level rise of this much within _ONSET_SPAN frames is an attack
_ONSET_SPAN = 3           # frames (48 ms)
BLOCK_FRAMES = 2048       # frames analysed at once (33 s of audio, ~10 MB of work arrays)


@dataclasses.dataclass(frozen=True)
class BassTrack:
  """A bass line's frame-wise pitch (`pitch`: times, f0, voicing, confidence) and level in dBFS
  (`level_db`, [T], floored at -80)."""
  pitch: PitchTrack
  level_db: np.ndarray

  @property
  def times(self) -> np.ndarray:
    return self.pitch.times


def num_frames(num_samples: int, sample_rate: int) -> int:
  """Frames of `track_bass` for a signal of `num_samples` at `sample_rate`: one per 16 ms from 0."""
  return 1 + _resampled_length(num_samples, sample_rate) // _HOP


def track_bass(wav_S: np.ndarray, sample_rate: int, *,
               block_frames: int = BLOCK_FRAMES) -> BassTrack:
  """Frame-wise f0 and level of a mono bass waveform [S] at any rate (frame i at i * 16 ms)."""
  x = resample(np.asarray(wav_S, np.float32), sample_rate, TRACK_SR)
  n = 1 + len(x) // _HOP
  # Frame i reads padded[i * hop : i * hop + span], centred on sample i * hop of the signal.
  left = _SPAN // 2
  padded = np.zeros(left + (n - 1) * _HOP + _SPAN, np.float32)
  padded[left: left + len(x)] = x
  tau = np.empty(n)
  dprime = np.empty(n)
  level = np.empty(n)
  for a in range(0, n, max(1, int(block_frames))):
    b = min(n, a + max(1, int(block_frames)))
    seg = padded[a * _HOP: (b - 1) * _HOP + _SPAN]
    tau[a:b], dprime[a:b], level[a:b] = _yin_frames(seg, b - a)
  level_db = np.maximum(10.0 * np.log10(level + 1e-12), _FLOOR_DB)
  loud = level_db >= max(float(level_db.max()) - _RANGE_DB, _FLOOR_DB + 1.0)
  voiced = (dprime < _THRESHOLD) & loud
  f0 = np.where(voiced, TRACK_SR / tau, np.nan)
  pitch = PitchTrack(times=np.arange(n) * (_HOP / TRACK_SR), f0_hz=f0, voiced=voiced,
                     confidence=np.clip(1.0 - dprime, 0.0, 1.0) * loud)
  return BassTrack(pitch=pitch, level_db=level_db)


def _yin_frames(seg: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(lag in samples, normalised difference at it, mean power of a window centred on the frame)
  of `count` frames of `seg` (frame j reads seg[j * hop : j * hop + span])."""
  frames = np.lib.stride_tricks.sliding_window_view(seg, _SPAN)[::_HOP][:count]
  frames = frames.astype(np.float64)
  head = frames[:, :_WINDOW]
  # r(tau) = sum_j x_j x_{j+tau} over the window, for every lag at once.
  spec = np.fft.rfft(frames, _NFFT)
  r = np.fft.irfft(np.conj(np.fft.rfft(head, _NFFT)) * spec, _NFFT)[:, : _TAU_MAX + 1]
  c = np.concatenate([np.zeros((count, 1)), np.cumsum(frames ** 2, axis=1)], axis=1)
  energy0 = c[:, _WINDOW]
  energy_tau = c[:, _WINDOW: _WINDOW + _TAU_MAX + 1] - c[:, : _TAU_MAX + 1]
  d = np.maximum(energy0[:, None] + energy_tau - 2.0 * r, 0.0)
  d[:, 0] = 0.0
  lags = np.arange(1, _TAU_MAX + 1)
  cum = np.cumsum(d[:, 1:], axis=1)
  dn = np.ones_like(d)
  dn[:, 1:] = d[:, 1:] * lags / np.maximum(cum, 1e-12)
  # The first dip below the threshold, followed down to its minimum; else the global minimum.
  band = dn[:, _TAU_MIN: _TAU_MAX]
  below = band < _THRESHOLD
  not_falling = np.concatenate([band[:, 1:] >= band[:, :-1],
                                np.ones((count, 1), bool)], axis=1)
  first = np.argmax(below, axis=1)
  after = np.arange(band.shape[1])[None] >= first[:, None]
  dip = np.argmax(below & not_falling & after, axis=1)
  has_dip = below.any(axis=1) & (below & not_falling & after).any(axis=1)
  k = np.where(has_dip, dip, np.argmin(band, axis=1)) + _TAU_MIN
  rows = np.arange(count)
  a, b, cc = dn[rows, k - 1], dn[rows, k], dn[rows, np.minimum(k + 1, _TAU_MAX)]
  denom = a - 2.0 * b + cc
  shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - cc) / np.where(denom == 0, 1.0, denom), 0.0)
  off = (_SPAN - _WINDOW) // 2   # the level of the window centred on the frame
  return k + np.clip(shift, -1.0, 1.0), b, (c[:, off + _WINDOW] - c[:, off]) / _WINDOW


def onset_times(track: BassTrack) -> np.ndarray:
  """Times of attacks: frames where the level has risen by >= 6 dB over the last 48 ms, at the
  steepest point of each rise, in voiced or loud frames."""
  level = track.level_db
  if len(level) <= _ONSET_SPAN:
    return np.zeros(0)
  before = np.lib.stride_tricks.sliding_window_view(
      np.concatenate([np.full(_ONSET_SPAN, level[0]), level[:-1]]), _ONSET_SPAN).min(axis=1)
  rise = level - before
  peak = (rise >= _ONSET_RISE_DB) & (rise >= np.roll(rise, 1)) & (rise > np.roll(rise, -1))
  peak &= level >= level.max() - _RANGE_DB
  frames = np.flatnonzero(peak)
  kept = []
  for f in frames:   # one attack per rise: at least _ONSET_SPAN frames apart
    if not kept or f - kept[-1] > _ONSET_SPAN:
      kept.append(f)
  return track.times[np.asarray(kept, int)] if kept else np.zeros(0)


def transcribe(track: BassTrack, *, min_note_s: float = 0.06) -> list[Note]:
  """Notes of a tracked bass line: f0 runs split at attacks, velocity from each note's level
  (linear from -50 dBFS = velocity 20 to 0 dBFS = 127, as `evaluation.pitch.transcribe_bass`)."""
  notes = f0_to_notes(track.pitch, min_note_s=min_note_s, split_times=onset_times(track))
  power = 10.0 ** (track.level_db / 10.0)
  hop = _HOP / TRACK_SR
  out = []
  for n in notes:
    a = int(np.floor(n.onset / hop + 0.5))
    b = max(a + 1, int(np.floor(n.offset / hop + 0.5)))
    seg = power[a:b]
    db = 10.0 * np.log10(max(float(seg.mean()) if seg.size else 0.0, 1e-12))
    out.append(dataclasses.replace(n, velocity=int(np.clip(round(127 + db * 107 / 50), 1, 127))))
  return out


def _resampled_length(num_samples: int, sample_rate: int) -> int:
  if int(sample_rate) == TRACK_SR:
    return int(num_samples)
  return int(round(num_samples * TRACK_SR / int(sample_rate)))
