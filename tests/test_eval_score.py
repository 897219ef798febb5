"""Harmony against the score, and intonation, on constructed inputs with known answers."""
import json

import numpy as np
import pytest

from bassgen.evaluation import pitch as P
from bassgen.evaluation import score as SC
from bassgen.evaluation import synthetic as S

SR = 16000
# swift-f0 is the `eval` extra: without it its cases are reported as skipped, not left out.
TRACKERS = ["pyin", pytest.param("swift-f0", marks=pytest.mark.skipif(
    not P.swift_f0_available(), reason="swift-f0 is not installed (pip install -e .[eval])"))]
# C  F  G  Am, one second each; the bass plays each root for most of its chord.
ROOTS = [36, 41, 43, 45]
MINOR = [False, False, False, True]
CHORDS = [{"start": float(i), "end": float(i + 1), "pitches": S.triad(r + 24, m)}
          for i, (r, m) in enumerate(zip(ROOTS, MINOR))]


def _notes(offset):
  return [P.Note(i + 0.02, i + 0.9, r + offset) for i, r in enumerate(ROOTS)]


def _score(offset=0):
  return {"chords": CHORDS,
          "bass_notes": [{"start": n.onset, "end": n.offset, "pitch": n.pitch}
                         for n in _notes(offset)]}


@pytest.mark.parametrize("tracker", TRACKERS)
def test_true_bass_scores_one_a_semitone_off_near_zero_and_the_fifth_is_a_chord_tone(tracker):
  def metrics(offset):
    wav = S.bass_line(_notes(offset), SR, duration=4.0)
    return SC.score_metrics(P.track_pitch(wav, SR, tracker=tracker), _score(0))

  true = metrics(0)
  assert true["score_pitch_class_accuracy"] > 0.95
  assert true["score_chord_tone_rate"] > 0.95
  semitone = metrics(1)
  assert semitone["score_pitch_class_accuracy"] < 0.05
  assert semitone["score_chord_tone_rate"] < 0.05
  fifth = metrics(7)
  assert fifth["score_chord_tone_rate"] > 0.95          # on the chord, ...
  assert fifth["score_pitch_class_accuracy"] < 0.05     # ... but not the written note


@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_55hz_tone_detuned_by_20_cents_measures_20_cents(tracker):
  midi = P.hz_to_midi(55.0)                       # A1 = MIDI 33 exactly
  notes = [P.Note(0.05, 2.95, 33)]
  detuned = S.pluck(float(midi) + 0.2, 2.9, SR, decay=0.5)
  wav = np.zeros(3 * SR, np.float32)
  wav[int(0.05 * SR): int(0.05 * SR) + len(detuned)] = detuned
  m = SC.intonation(P.track_pitch(wav, SR, tracker=tracker))
  assert abs(m["median_cents_off"] - 20.0) <= 2.0, m
  assert m["share_off_25c"] < 0.2
  in_tune = SC.intonation(P.track_pitch(S.bass_line(notes, SR, duration=3.0), SR,
                                        tracker=tracker))
  assert in_tune["median_cents_off"] < 4.0   # the trackers' own floor: ~3 cents on a clean tone


def test_chord_tone_rate_only_counts_frames_under_a_chord():
  times = np.arange(0, 4, 0.01)
  f0 = np.full(len(times), P.midi_to_hz(36))   # C all along
  track = P.PitchTrack(times, f0, np.ones(len(times), bool), np.ones(len(times)))
  one_chord = [{"start": 0.0, "end": 1.0, "pitches": [60, 64, 67]}]   # C major, then no chord
  assert SC.chord_tone_rate(track, one_chord) == 1.0
  assert SC.chord_tone_rate(track, [{"start": 0.0, "end": 4.0, "pitches": [62, 65, 69]}]) == 0.0
  assert np.isnan(SC.chord_tone_rate(track, []))


def test_gap_closed_and_read_score(tmp_path):
  assert SC.gap_closed(0.3, 0.3, 0.9) == 0.0
  assert SC.gap_closed(0.75, 0.3, 0.9) == pytest.approx(0.75)
  assert np.isnan(SC.gap_closed(0.5, 0.4, 0.4))
  (tmp_path / "song.json").write_text(json.dumps(_score()))
  s = SC.read_score(tmp_path)
  assert len(s["chords"]) == 4 and len(SC.crop_score(s, 2.5)["bass_notes"]) == 3
