"""Harmony metrics: a bass on the chord roots fits the mix, one a tritone off does not."""
import numpy as np
import pytest

from bassgen.errors import BassgenError
from bassgen.evaluation import harmony as H
from bassgen.evaluation import pitch as P
from bassgen.evaluation import synthetic as S

SR = 16000
# C  F  G  Am Dm G  C  Em, half a second each, voiced an octave above the bass.
ROOTS = [48, 53, 55, 57, 50, 55, 48, 52]
MINOR = [False, False, False, True, True, False, False, True]
# swift-f0 is the `eval` extra: without it its cases are reported as skipped, not left out.
TRACKERS = ["pyin", pytest.param("swift-f0", marks=pytest.mark.skipif(
    not P.swift_f0_available(), reason="swift-f0 is not installed (pip install -e .[eval])"))]


def _bass_notes(offset):
  return [P.Note(0.5 * i + 0.01, 0.5 * i + 0.45, r - 12 + offset) for i, r in enumerate(ROOTS)]


@pytest.fixture(scope="module")
def mix():
  chords = [(0.5 * i, 0.5 * i + 0.5, S.triad(r + 12, m))
            for i, (r, m) in enumerate(zip(ROOTS, MINOR))]
  pad = S.chord_pad(chords, SR, duration=4.0)
  melody = [P.Note(0.25 * i, 0.25 * i + 0.2, p)
            for i, p in enumerate([76, 74, 72, 71, 72, 74, 76, 77, 79, 77, 76, 74, 72, 71, 72, 74])]
  return pad + S.bass_line(melody, SR, duration=4.0, harmonics=3, amplitude=0.1)


@pytest.mark.parametrize("tracker", TRACKERS)
def test_roots_score_high_and_a_tritone_off_scores_low(mix, tracker):
  def share(offset):
    bass = S.bass_line(_bass_notes(offset), SR, duration=4.0)
    return H.harmony_metrics(bass, SR, mix=mix, tracker=tracker)["chord_tone_share"]

  assert share(0) > 0.9          # roots
  assert share(7) > 0.9          # fifths are chord tones too
  assert share(6) < 0.1          # tritone off
  assert share(1) < 0.1          # a semitone off
  assert 0.45 < share(4) < 0.75  # a major third: a chord tone on the 5 major chords only


def test_pitch_class_accuracy_against_a_known_bass(mix):
  truth = _bass_notes(0)
  same = S.bass_line(truth, SR, duration=4.0)
  octave_up = S.bass_line(_bass_notes(12), SR, duration=4.0)
  tritone = S.bass_line(_bass_notes(6), SR, duration=4.0)
  m = H.harmony_metrics(same, SR, ref_notes=truth, tracker="pyin")
  assert m["pitch_class_accuracy"] > 0.9 and m["pitch_accuracy"] > 0.9
  m = H.harmony_metrics(octave_up, SR, ref_notes=truth, tracker="pyin")
  assert m["pitch_class_accuracy"] > 0.9 and m["pitch_accuracy"] < 0.1   # octave errors ignored
  m = H.harmony_metrics(tritone, SR, ref_bass=same, tracker="pyin")      # known bass as audio
  assert m["pitch_class_accuracy"] < 0.05
  m = H.harmony_metrics(np.zeros_like(same), SR, mix=mix, ref_notes=truth, tracker="pyin")
  assert m["bass_voiced_fraction"] == 0.0 and m["pitch_class_accuracy"] == 0.0
  assert np.isnan(m["chord_tone_share"])                                  # nothing to score


def test_chord_tone_share_ignores_frames_where_the_mix_is_silent():
  times = np.arange(10) * 0.01
  voiced = np.ones(10, bool)
  track = P.PitchTrack(times, np.full(10, float(P.midi_to_hz(36))), voiced, voiced.astype(float))
  chroma = np.zeros((12, 10))
  chroma[[0, 4, 7], :5] = 1.0    # C major for 5 frames, then silence
  assert H.chord_tone_share(track, chroma) == 1.0
  chroma[[0, 4, 7], 5:] = [[0.2], [1.0], [0.9]]   # C is now 3rd strongest of 3: still top 3
  assert H.chord_tone_share(track, chroma) == 1.0
  assert H.chord_tone_share(track, chroma, top_k=2) == 0.5
  with pytest.raises(BassgenError, match="top_k"):
    H.chord_tone_share(track, chroma, top_k=0)


def test_mix_chroma_finds_the_chord():
  chords = [(0.0, 1.0, S.triad(57, minor=True))]     # A minor: A C E = 9 0 4
  chroma = H.mix_chroma(S.chord_pad(chords, SR), SR, np.array([0.3, 0.5, 0.7]))
  assert chroma.shape == (12, 3)
  assert set(np.argsort(chroma[:, 1])[-3:]) == {9, 0, 4}


def test_ref_bass_and_ref_notes_are_exclusive(mix):
  with pytest.raises(BassgenError, match="not several"):
    H.harmony_metrics(mix, SR, ref_bass=mix, ref_notes=_bass_notes(0), tracker="pyin")


def test_bass_metrics_suite_combines_the_families(mix):
  from bassgen.evaluation.suite import bass_metrics
  truth = _bass_notes(0)
  bass = S.bass_line(truth, SR, duration=4.0)
  m = bass_metrics(bass, SR, mix=mix, ref_notes=truth, style_ref=bass, tracker="pyin")
  assert m["chord_tone_share"] > 0.9 and m["pitch_class_accuracy"] > 0.9
  assert m["onset_f_ref"] > 0.9 and m["timbre_fd"] == 0.0
  off = bass_metrics(S.bass_line(_bass_notes(6), SR, duration=4.0), SR, mix=mix, ref_notes=truth,
                     tracker="pyin")
  assert off["chord_tone_share"] < 0.1 and "timbre_fd" not in off


def test_an_analysed_reference_scores_like_the_raw_song(mix, monkeypatch):
  from bassgen.evaluation import suite
  truth = S.bass_line(_bass_notes(0), SR, duration=4.0)
  basses = [S.bass_line(_bass_notes(k), SR, duration=4.0) for k in (0, 6)]
  direct = [suite.bass_metrics(b, SR, mix=mix, ref_bass=truth, tracker="pyin") for b in basses]
  song = suite.analyse_reference(SR, mix=mix, ref_bass=truth, tracker="pyin")
  calls = []
  real = H.track_pitch
  monkeypatch.setattr(H, "track_pitch", lambda *a, **k: calls.append(1) or real(*a, **k))
  reused = [suite.bass_metrics(b, SR, reference=song, tracker="pyin") for b in basses]
  assert reused == direct
  assert direct[0]["pitch_class_accuracy"] > 0.9 > direct[1]["pitch_class_accuracy"]
  assert len(calls) == len(basses)  # the generated basses only; the true bass was tracked once
  with pytest.raises(BassgenError, match="not both"):
    suite.bass_metrics(basses[0], SR, mix=mix, reference=song)
