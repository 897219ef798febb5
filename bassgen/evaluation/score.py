"""Harmony and intonation measured against the truth: a rendered track's score (`song.json`).

Renders keep their score: the chords (with their pitches) and the bass notes, with times in
seconds. Against it, per frame of a tracked bass:

- `chord_tone_rate`: the share of voiced bass frames, where a chord is written, whose pitch class
  is one of that chord's pitch classes (a bass on the chord's fifth counts).
- `score_pitch_class_accuracy`: the share of frames where the score's bass sounds in which the
  tracked bass is voiced and on the written pitch class (within 50 cents, mir_eval's raw chroma
  accuracy).
- `intonation`: how far the voiced frames sit from the equal-tempered semitone grid (A4 = 440 Hz):
  the median absolute deviation in cents and the share of frames more than 25 cents off.

For real stems there is no score; `harmony.pitch_class_accuracy` against the true bass stem's
tracked pitch is the same measurement. `gap_closed` puts a number between its shuffled-pairs and
true-bass baselines.
"""
from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

from bassgen.errors import BassgenError
from bassgen.evaluation.harmony import pitch_class_accuracy
from bassgen.evaluation.pitch import PitchTrack, as_notes, notes_to_track

OFF_GRID_CENTS = 25.0


def read_score(path: str | pathlib.Path) -> dict:
  """{'chords': [...], 'bass_notes': [...]} of a render's song.json (or of its folder)."""
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / "song.json"
  if not path.is_file():
    raise BassgenError(f"{path}: no score. Harmony against the score needs a rendered track "
                       "(bassgen render writes song.json beside the stems).")
  try:
    song = json.loads(path.read_text())
    chords, notes = song["chords"], song["bass_notes"]
  except (ValueError, KeyError, TypeError):
    raise BassgenError(f"{path}: not a bassgen song.json (needs 'chords' and 'bass_notes'); "
                       "re-render the track with bassgen render.") from None
  return {"chords": chords, "bass_notes": notes}


def chord_pitch_classes(chords: Iterable[dict], times) -> np.ndarray:
  """[T, 12] bool: the written chord's pitch classes at each frame time (all False between chords)."""
  times = np.asarray(times, dtype=np.float64)
  out = np.zeros((len(times), 12), bool)
  for c in chords:
    sel = (times >= float(c["start"])) & (times < float(c["end"]))
    for p in c["pitches"]:
      out[sel, int(p) % 12] = True
  return out


def chord_tone_rate(track: PitchTrack, chords: Iterable[dict]) -> float:
  """Share of voiced frames (where a chord is written) on one of the chord's pitch classes; nan
  when no voiced frame falls under a chord."""
  pcs_TxP = chord_pitch_classes(chords, track.times)
  use_T = track.voiced & pcs_TxP.any(axis=1)
  if not np.any(use_T):
    return float("nan")
  pc_T = np.mod(np.round(track.midi[use_T]).astype(np.int64), 12)
  return float(np.mean(pcs_TxP[use_T][np.arange(len(pc_T)), pc_T]))


def score_pitch_class_accuracy(track: PitchTrack, bass_notes: Iterable) -> float:
  """Raw chroma accuracy of `track` against the written bass notes (nan if the score has none)."""
  ref = notes_to_track(as_notes(bass_notes), track.times)
  return pitch_class_accuracy(track, ref)["pitch_class_accuracy"]


def cents_off_grid(track: PitchTrack) -> np.ndarray:
  """[V] signed deviation (cents) of each voiced frame from its nearest semitone."""
  midi = track.midi[track.voiced]
  return 100.0 * (midi - np.round(midi))


def intonation(track: PitchTrack) -> dict[str, float]:
  """{'median_cents_off', 'share_off_25c'} over voiced frames (nan when nothing is voiced)."""
  dev = np.abs(cents_off_grid(track))
  if dev.size == 0:
    return {"median_cents_off": float("nan"), "share_off_25c": float("nan")}
  return {"median_cents_off": float(np.median(dev)),
          "share_off_25c": float(np.mean(dev > OFF_GRID_CENTS))}


def score_metrics(track: PitchTrack, score: dict) -> dict[str, float]:
  """Every score-based number of one tracked bass: chord-tone rate, pitch-class accuracy against
  the written bass, intonation and the voiced rate."""
  out = {"score_chord_tone_rate": chord_tone_rate(track, score["chords"]),
         "score_pitch_class_accuracy": score_pitch_class_accuracy(track, score["bass_notes"]),
         "voiced_rate": float(np.mean(track.voiced)) if len(track.voiced) else float("nan")}
  out.update(intonation(track))
  return out


def gap_closed(value: float, low: float, high: float) -> float:
  """(value − low) / (high − low): 0 at the shuffled-pairs baseline, 1 at the true bass."""
  if not all(np.isfinite(v) for v in (value, low, high)) or abs(high - low) < 1e-9:
    return float("nan")
  return float((value - low) / (high - low))


def crop_score(score: dict, seconds: float | None) -> dict:
  """The score up to `seconds` (what an evaluation that cuts tracks to `seconds` scores against)."""
  if not seconds:
    return score
  keep = lambda items: [x for x in items if float(x["start"]) < seconds]
  return {"chords": keep(score["chords"]), "bass_notes": keep(score["bass_notes"])}

