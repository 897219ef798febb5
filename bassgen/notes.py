"""Notes and pitch tracks of a monophonic bass line, and MIDI files of notes.

`PitchTrack` (frame-wise f0) and `Note` are what the trackers (`bassgen.transcription` for the
generated bass, `bassgen.evaluation.pitch` for evaluation) produce and what `f0_to_notes` turns
one into the other with; `notes_to_midi` writes a Standard MIDI File directly (no MIDI library).
"""
from __future__ import annotations

import dataclasses
import heapq
import os
import pathlib
import struct
from collections.abc import Iterable, Sequence

import numpy as np

from bassgen.data.audio import atomic_write_bytes
from bassgen.errors import BassgenError


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


def midi_name(pitch: int) -> str:
  """Scientific pitch name of a MIDI number: 28 -> 'E1', 61 -> 'C#4'."""
  names = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
  return f"{names[int(pitch) % 12]}{int(pitch) // 12 - 1}"


def midi_to_hz(midi) -> np.ndarray:
  """Frequency in Hz of (fractional) MIDI pitches."""
  return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)



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
  midi_T = track.midi
  pitch_T = np.full(len(midi_T), -1, dtype=np.int64)
  for start, end, _ in _runs(np.where(track.voiced, 0, -1)):
    run = midi_T[start:end]
    size = min(width, len(run) if len(run) % 2 else len(run) - 1)
    if size > 1:
      run = _median_filter(run, size)
    pitch_T[start:end] = np.round(run).astype(np.int64)
  return pitch_T


def _median_filter(x_T: np.ndarray, size: int) -> np.ndarray:
  """Running median over an odd `size`, edges extended (scipy.ndimage.median_filter, 'nearest')."""
  half = size // 2
  padded = np.pad(x_T, half, mode="edge")
  return np.median(np.lib.stride_tricks.sliding_window_view(padded, size), axis=-1)


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


_TICKS_PER_BEAT = 480
_TEMPO_US = 500_000   # 120 beats per minute: one second is 960 ticks


def notes_to_midi(notes: Iterable[Note], path: str | os.PathLike, *, program: int = 33,
                  overwrite: bool = False) -> pathlib.Path:
  """Writes notes as a one-track MIDI file (GM program 33 = Electric Bass (finger)), atomically."""
  if not 0 <= int(program) <= 127:
    raise BassgenError(f"program={program}: a General MIDI program is 0 to 127 (bass: 32 to 39).")
  return atomic_write_bytes(path, midi_bytes(notes, program=program), overwrite=overwrite)


def midi_bytes(notes: Iterable[Note], *, program: int = 33) -> bytes:
  """A format-0 Standard MIDI File (120 BPM, 480 ticks per beat) of the notes on channel 1."""
  ticks = lambda seconds: int(round(seconds * 1e6 / _TEMPO_US * _TICKS_PER_BEAT))
  events = []   # (tick, order, bytes): note-offs sort before note-ons at the same tick
  for n in as_notes(notes):
    if n.offset > n.onset:
      pitch = int(np.clip(n.pitch, 0, 127))
      velocity = int(np.clip(n.velocity, 1, 127))
      events.append((ticks(n.onset), 1, bytes([0x90, pitch, velocity])))
      events.append((max(ticks(n.offset), ticks(n.onset) + 1), 0, bytes([0x80, pitch, 0])))
  events.sort(key=lambda e: (e[0], e[1]))
  track = bytearray(b"\x00\xff\x51\x03" + _TEMPO_US.to_bytes(3, "big"))   # set tempo
  track += b"\x00\xff\x03\x04bass"                                       # track name
  track += bytes([0x00, 0xC0, int(program)])                                # program change
  last = 0
  for tick, _, data in events:
    track += varlen(tick - last) + data
    last = tick
  track += b"\x00\xff\x2f\x00"                                           # end of track
  header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, _TICKS_PER_BEAT)
  return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def varlen(value: int) -> bytes:
  """MIDI's variable-length quantity: 7 bits per byte, high bit set on all but the last."""
  out = [value & 0x7F]
  value >>= 7
  while value:
    out.append(0x80 | (value & 0x7F))
    value >>= 7
  return bytes(reversed(out))
