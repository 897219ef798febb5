"""Timbre metric: zero for the same sound; a change of sound counts more than other notes."""
import numpy as np
import pytest

from bassgen.evaluation import frechet
from bassgen.evaluation import pitch as P
from bassgen.evaluation import synthetic as S
from bassgen.evaluation import timbre as T

SR = 16000


def _line(seed, **sound):
  pitches = np.random.default_rng(seed).integers(28, 52, 32)   # E1..D#3, 16th-ish notes for 8 s
  notes = [P.Note(0.25 * i, 0.25 * i + 0.22, int(p)) for i, p in enumerate(pitches)]
  return S.bass_line(notes, SR, duration=8.0, **sound)


@pytest.fixture(scope="module")
def ref():
  return _line(1)


def test_identical_and_louder_copies_have_zero_distance(ref):
  assert T.timbre_distance(ref, ref, SR) == 0.0
  assert T.timbre_distance(0.25 * ref, ref, SR) == pytest.approx(0.0, abs=1e-3)   # c0 left out
  assert T.timbre_distance(0.25 * ref, ref, SR, include_c0=True) > 1.0


def test_a_change_of_sound_outweighs_other_notes(ref):
  other_notes = T.timbre_distance(_line(2), ref, SR)
  for sound in ({"rolloff": 2.0}, {"rolloff": 0.4}, {"decay": 12.0}, {"harmonics": 3}):
    assert T.timbre_distance(_line(1, **sound), ref, SR) > 1.5 * other_notes, sound
  # and it grows with the size of the change
  steps = [T.timbre_distance(_line(1, rolloff=r), ref, SR) for r in (1.2, 1.6, 2.2)]
  assert steps[0] < steps[1] < steps[2]
  assert T.timbre_metrics(_line(1, rolloff=2.2), ref, SR) == {"timbre_fd": steps[2]}


def test_silence_is_undefined_and_silent_frames_are_ignored(ref):
  assert np.isnan(T.timbre_distance(np.zeros_like(ref), ref, SR))
  padded = np.concatenate([np.zeros(SR), ref, np.zeros(SR)])   # frames fall differently, too
  assert T.timbre_distance(padded, ref, SR) < 0.02 * T.timbre_distance(_line(2), ref, SR)
  assert T.mfcc_frames(ref, SR).shape[1] == T.N_MFCC - 1


def test_frechet_distance_of_gaussians_has_closed_form():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((4000, 3))
  cov = np.diag([1.0, 4.0, 9.0])
  assert frechet.frechet_distance(np.zeros(3), cov, np.zeros(3), cov) == 0.0
  # Shift by mu, scale: |mu|^2 + sum (s1 - s2)^2 for diagonal covariances.
  d = frechet.frechet_distance(np.zeros(3), np.eye(3), np.array([1.0, 2.0, 0.0]), cov)
  assert d == pytest.approx(5.0 + (0 + 1 + 4), rel=1e-9)
  # A singular covariance (fewer vectors than dimensions) still works.
  assert frechet.frechet_distance_features(a[:3], a[:3]) == 0.0
  assert frechet.frechet_distance_features(a, a + 1.0) == pytest.approx(3.0, rel=1e-9)
