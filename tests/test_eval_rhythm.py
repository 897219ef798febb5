"""Rhythm metrics: a bass on the mix's onsets scores high; 100 ms off it loses the F-measure."""
import numpy as np
import pytest

from bassgen.errors import BassgenError
from bassgen.evaluation import pitch as P
from bassgen.evaluation import rhythm as R
from bassgen.evaluation import synthetic as S

SR = 16000
STARTS = [0.25 + 0.375 * i for i in range(10)]          # an uneven grid, not a plain pulse
PITCHES = [36, 36, 43, 41, 40, 36, 38, 43, 45, 40]


def _bass(shift=0.0):
  return S.bass_line([P.Note(s + shift, s + shift + 0.3, p) for s, p in zip(STARTS, PITCHES)], SR,
                     duration=4.5)


@pytest.fixture(scope="module")
def mix():
  chords = [(s, s + 0.375, S.triad(p + 24)) for s, p in zip(STARTS, PITCHES)]   # legato
  return S.chord_pad(chords, SR, duration=4.5)


def test_detected_onsets_match_the_notes():
  onsets = R.bass_onsets(_bass(), SR)
  assert len(onsets) == len(STARTS)
  np.testing.assert_allclose(onsets, STARTS, atol=0.025)


def test_bass_on_the_mix_onsets_scores_high_and_shifted_100ms_scores_zero(mix):
  on_time = R.rhythm_metrics(_bass(), SR, mix=mix)
  late = R.rhythm_metrics(_bass(0.1), SR, mix=mix)
  early = R.rhythm_metrics(_bass(-0.1), SR, mix=mix)
  assert on_time["onset_f_mix"] > 0.9
  assert late["onset_f_mix"] < 0.15 and early["onset_f_mix"] < 0.15
  assert set(on_time) == {"onset_f_mix", "onset_precision_mix", "onset_recall_mix"}


def test_against_a_known_bass_as_audio_or_notes():
  truth = [P.Note(s, s + 0.3, p) for s, p in zip(STARTS, PITCHES)]
  same = R.rhythm_metrics(_bass(), SR, ref_bass=_bass())
  assert same["onset_f_ref"] == 1.0
  assert R.rhythm_metrics(_bass(), SR, ref_notes=truth)["onset_f_ref"] > 0.9
  assert R.rhythm_metrics(_bass(0.1), SR, ref_notes=truth)["onset_f_ref"] < 0.15
  # Half the notes: precision stays, recall halves.
  half = S.bass_line(truth[::2], SR, duration=4.5)
  m = R.rhythm_metrics(half, SR, ref_notes=truth)
  assert m["onset_precision_ref"] > 0.9 and m["onset_recall_ref"] == pytest.approx(0.5, abs=0.1)


def test_onset_f_measure_edge_cases():
  assert R.onset_f_measure([1.0, 2.0], [1.04, 2.06]) == {
      "f_measure": 0.5, "precision": 0.5, "recall": 0.5}
  assert R.onset_f_measure([1.0], [])["f_measure"] == 0.0
  assert np.isnan(R.onset_f_measure([], [])["f_measure"])
  assert R.onset_times(np.zeros(SR), SR).size == 0
  with pytest.raises(BassgenError, match="window"):
    R.onset_f_measure([1.0], [1.0], window=0.0)
  with pytest.raises(BassgenError, match="mix_reference"):
    R.rhythm_metrics(_bass(), SR, mix=_bass(), mix_reference="downbeats")


@pytest.mark.slow
def test_beats_reference(mix):
  m = R.rhythm_metrics(_bass(), SR, mix=mix, mix_reference="beats")
  assert 0.0 <= m["onset_f_mix"] <= 1.0 and m["onset_precision_mix"] > 0.3
