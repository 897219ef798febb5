"""All per-song bass metrics in one call, for the `bassgen eval` command and notebooks."""
from __future__ import annotations

import numpy as np

from bassgen.evaluation._signal import as_mono, check_sample_rate


def bass_metrics(bass, sample_rate: int, *, mix=None, ref_bass=None, ref_notes=None,
                 style_ref=None, tracker: str = "auto") -> dict[str, float]:
  """Harmony, rhythm and timbre metrics of one (generated) bass.

  Args:
    bass: bass waveform [S].
    sample_rate: Hz, shared by all waveforms.
    mix: the mix it was generated for (chord-tone share, onset F against the mix).
    ref_bass: the true bass for this mix as audio, or `ref_notes` as notes (pitch-class accuracy,
      onset F against it); `ref_bass` is also the default timbre reference.
    style_ref: a reference bass recording for the timbre distance (e.g. the grounding reference).
    tracker: f0 tracker for the harmony metrics ("auto", "pyin", "swift-f0").

  Returns:
    The union of `harmony_metrics`, `rhythm_metrics` and, when a timbre reference is known,
    `timbre_metrics`.
  """
  from bassgen.evaluation.harmony import harmony_metrics  # pylint: disable=g-import-not-at-top
  from bassgen.evaluation.rhythm import rhythm_metrics  # pylint: disable=g-import-not-at-top
  from bassgen.evaluation.timbre import timbre_metrics  # pylint: disable=g-import-not-at-top

  sr = check_sample_rate(sample_rate)
  bass_S = as_mono(bass, "bass")
  out = harmony_metrics(bass_S, sr, mix=mix, ref_bass=ref_bass, ref_notes=ref_notes,
                        tracker=tracker)
  out.update(rhythm_metrics(bass_S, sr, mix=mix, ref_bass=ref_bass, ref_notes=ref_notes))
  timbre_ref = style_ref if style_ref is not None else ref_bass
  if timbre_ref is not None:
    out.update(timbre_metrics(bass_S, np.asarray(timbre_ref), sr))
  return out
