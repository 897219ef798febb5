"""All per-song bass metrics in one call, for the `bassgen eval` command and notebooks."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bassgen.errors import BassgenError
from bassgen.evaluation._signal import as_mono, check_sample_rate
from bassgen.evaluation.harmony import harmony_metrics
from bassgen.evaluation.pitch import as_notes, track_pitch
from bassgen.evaluation.rhythm import bass_onsets, mix_reference_times, rhythm_metrics
from bassgen.evaluation.timbre import timbre_metrics


@dataclasses.dataclass(frozen=True)
class Reference:
  """What a bass is scored against for one song, analysed once (`analyse_reference`) so that
  several systems' basses for that song are scored without tracking the true bass again."""
  mix: np.ndarray | None = None          # for the chord-tone share (its chroma at the bass's frames)
  mix_onsets: np.ndarray | None = None   # seconds
  ref_track: Any = None                  # pitch track of the true bass (harmony)
  ref_onsets: np.ndarray | None = None   # seconds: of the true bass, or of its known notes
  ref_notes: Any = None                  # known notes, when the true bass is given as notes
  timbre_ref: np.ndarray | None = None   # the timbre reference: a style reference or the true bass


def analyse_reference(sample_rate: int, *, mix=None, ref_bass=None, ref_notes=None,
                      style_ref=None, tracker: str = "auto") -> Reference:
  """The song side of `bass_metrics` (same arguments), computed once."""

  sr = check_sample_rate(sample_rate)
  if ref_bass is not None and ref_notes is not None:
    raise BassgenError("give either ref_bass (audio) or ref_notes (MIDI/JSON notes), not both.")
  mix_S = None if mix is None else as_mono(mix, "mix")
  ref_S = None if ref_bass is None else as_mono(ref_bass, "ref_bass")
  notes = None if ref_notes is None else as_notes(ref_notes)
  timbre_ref = style_ref if style_ref is not None else ref_S
  return Reference(
      mix=mix_S,
      mix_onsets=None if mix_S is None else mix_reference_times(mix_S, sr),
      ref_track=None if ref_S is None else track_pitch(ref_S, sr, tracker=tracker),
      ref_onsets=(bass_onsets(ref_S, sr) if ref_S is not None else
                  None if notes is None else np.array([n.onset for n in notes])),
      ref_notes=notes,
      timbre_ref=None if timbre_ref is None else np.asarray(timbre_ref))


def bass_metrics(bass, sample_rate: int, *, mix=None, ref_bass=None, ref_notes=None,
                 style_ref=None, tracker: str = "auto",
                 reference: Reference | None = None, bass_track: Any = None
                 ) -> dict[str, float]:
  """Harmony, rhythm and timbre metrics of one (generated) bass.

  Args:
    bass: bass waveform [S].
    sample_rate: Hz, shared by all waveforms.
    mix: the mix it was generated for (chord-tone share, onset F against the mix).
    ref_bass: the true bass for this mix as audio, or `ref_notes` as notes (pitch-class accuracy,
      onset F against it); `ref_bass` is also the default timbre reference.
    style_ref: a reference bass recording for the timbre distance (e.g. the grounding reference).
    tracker: f0 tracker for the harmony metrics ("auto", "pyin", "swift-f0").
    reference: or all of mix/ref_bass/ref_notes/style_ref already analysed (`analyse_reference`),
      to score several basses for one song without analysing the song each time.
    bass_track: the bass's pitch track, when already tracked (it is tracked otherwise).

  Returns:
    The union of `harmony_metrics`, `rhythm_metrics` and, when a timbre reference is known,
    `timbre_metrics`.
  """

  sr = check_sample_rate(sample_rate)
  if reference is None:
    reference = analyse_reference(sr, mix=mix, ref_bass=ref_bass, ref_notes=ref_notes,
                                  style_ref=style_ref, tracker=tracker)
  elif any(x is not None for x in (mix, ref_bass, ref_notes, style_ref)):
    raise BassgenError("give the song either as mix/ref_bass/ref_notes/style_ref or as an "
                       "analysed `reference`, not both.")
  r = reference
  bass_S = as_mono(bass, "bass")
  out = harmony_metrics(bass_S, sr, mix=r.mix, ref_track=r.ref_track, ref_notes=r.ref_notes,
                        tracker=tracker, bass_track=bass_track)
  out.update(rhythm_metrics(bass_S, sr, mix_onsets=r.mix_onsets, ref_onsets=r.ref_onsets))
  if r.timbre_ref is not None:
    out.update(timbre_metrics(bass_S, r.timbre_ref, sr))
  return out
