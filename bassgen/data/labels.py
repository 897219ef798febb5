"""Per-frame bass pitch-class labels, the targets of the harmony pathway's auxiliary loss.

Label k in 0..11 is the pitch class (C = 0) of the bass note sounding at the centre of a latent
frame; `NO_BASS` (12) means no bass note sounds. For renders they come from the score (`song.json`
bass notes); for real stems from the tracked pitch of the bass stem (`labels_from_f0`).
"""
from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import numpy as np

NO_BASS = 12
NUM_CLASSES = 13


def frame_times(num_frames: int, frames_per_second: float) -> np.ndarray:
  return (np.arange(num_frames) + 0.5) / float(frames_per_second)


def labels_from_notes(bass_notes: Sequence[dict], num_frames: int,
                      frames_per_second: float) -> np.ndarray:
  """[num_frames] int32 labels from notes {'start', 'end', 'pitch'} (the later onset wins)."""
  times = frame_times(num_frames, frames_per_second)
  labels = np.full(num_frames, NO_BASS, np.int32)
  for n in sorted(bass_notes, key=lambda n: float(n["start"])):
    labels[(times >= float(n["start"])) & (times < float(n["end"]))] = int(n["pitch"]) % 12
  return labels


def labels_from_f0(times_s: np.ndarray, f0_hz: np.ndarray, num_frames: int,
                   frames_per_second: float) -> np.ndarray:
  """[num_frames] labels from a pitch track (nan = unvoiced), read at each frame's centre."""
  times = frame_times(num_frames, frames_per_second)
  idx = np.clip(np.searchsorted(times_s, times), 0, len(times_s) - 1)
  f0 = np.asarray(f0_hz, np.float64)[idx]
  labels = np.full(num_frames, NO_BASS, np.int32)
  ok = np.isfinite(f0) & (f0 > 0)
  labels[ok] = np.mod(np.round(69 + 12 * np.log2(f0[ok] / 440.0)).astype(np.int64), 12)
  return labels


def read_bass_notes(song_json: str | pathlib.Path) -> list[dict] | None:
  """The score's bass notes of a render's song.json, or None when there is none."""
  path = pathlib.Path(song_json)
  if not path.is_file():
    return None
  try:
    notes = json.loads(path.read_text())["bass_notes"]
  except (ValueError, KeyError, TypeError):
    return None
  return list(notes)


def onsets_from_notes(bass_notes: Sequence[dict], num_frames: int,
                      frames_per_second: float) -> np.ndarray:
  """[num_frames] int8: 1 on the latent frame in which a bass note starts (the onset channel of
  `model.harmony.onsets`), 0 elsewhere. A note starting exactly on a frame boundary belongs to the
  frame it opens."""
  out = np.zeros(num_frames, np.int8)
  for n in bass_notes:
    t = int(np.floor(float(n["start"]) * float(frames_per_second) + 1e-6))
    if 0 <= t < num_frames:
      out[t] = 1
  return out


def onsets_from_labels(labels_T: np.ndarray) -> np.ndarray:
  """[T] int8 note starts of a per-frame label track without a score (a tracked stem): a frame
  opens a note where the bass starts sounding or changes pitch class. Repeated notes of one pitch
  class without a gap are not seen; a score is needed for those."""
  labels_T = np.asarray(labels_T)
  prev = np.concatenate([[NO_BASS], labels_T[:-1]])
  return ((labels_T != NO_BASS) & (labels_T != prev)).astype(np.int8)
