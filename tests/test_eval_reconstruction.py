"""Reconstruction metrics: known answers on constructed signals."""
import numpy as np
import pytest

from bassgen.errors import BassgenError
from bassgen.evaluation import reconstruction as rec

SR = 16000


def _noise(seed=0, seconds=0.5):
  return np.random.default_rng(seed).standard_normal(int(SR * seconds)).astype(np.float32) * 0.1


def _bass(seconds=0.5, f0=55.0):
  t = np.arange(int(SR * seconds)) / SR
  return sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * np.exp(-2 * t) * 0.3


def test_identical_signals_have_zero_distance():
  x = _bass()
  assert rec.log_mel_l1_db(x, x, SR) == 0.0
  assert rec.multi_resolution_stft_distance(x, x) == 0.0
  assert rec.si_sdr(x, x) == np.inf
  m = rec.reconstruction_metrics(x, x.copy(), SR)
  assert m == {"mr_stft": 0.0, "log_mel_l1_db": 0.0, "si_sdr_db": np.inf}


def test_log_mel_of_a_gain_change_is_the_gain_in_db():
  x = _noise()
  assert rec.log_mel_l1_db(x, 0.5 * x, SR) == pytest.approx(20 * np.log10(2), abs=1e-6)
  assert rec.log_mel_l1_db(x, 2.0 * x, SR) == pytest.approx(20 * np.log10(2), abs=1e-6)


def test_log_mel_floor_is_taken_from_the_reference_and_bounds_silence():
  x = _noise()
  silent = np.zeros_like(x)
  # Every bin of the silent estimate sits on the floor (ref max - 30 dB).
  d30 = rec.log_mel_l1_db(x, silent, SR, floor_db=30.0)
  d80 = rec.log_mel_l1_db(x, silent, SR, floor_db=80.0)
  assert 0 < d30 <= 30.0 and 0 < d80 <= 80.0 and d80 > d30
  # A far-too-loud estimate is not floored away: the floor comes from the reference only.
  assert rec.log_mel_l1_db(x, 100 * x, SR, floor_db=30.0) == pytest.approx(40.0, abs=1e-6)


def test_mr_stft_of_a_gain_change_has_closed_form():
  x = _noise()
  for g in (0.5, 2.0):
    expected = abs(1 - g) + abs(np.log(g))   # spectral convergence + log-magnitude L1
    assert rec.multi_resolution_stft_distance(x, g * x) == pytest.approx(expected, rel=1e-6)


def test_mr_stft_and_mel_grow_with_distortion():
  x = _bass()
  n = _noise(seed=1)
  d = [rec.multi_resolution_stft_distance(x, x + a * n) for a in (0.01, 0.1, 1.0)]
  m = [rec.log_mel_l1_db(x, x + a * n, SR) for a in (0.01, 0.1, 1.0)]
  assert d[0] < d[1] < d[2] and m[0] < m[1] < m[2]


def test_si_sdr_matches_the_snr_of_orthogonal_noise_and_ignores_scale():
  x = _bass()
  x = x - x.mean()
  n = _noise(seed=2).astype(np.float64)
  n -= n.mean()
  n -= np.dot(n, x) / np.dot(x, x) * x          # orthogonal to x, still zero-mean
  n *= np.linalg.norm(x) / np.linalg.norm(n) * 10 ** (-12 / 20)   # 12 dB below x
  assert rec.si_sdr(x, x + n) == pytest.approx(12.0, abs=1e-6)
  assert rec.si_sdr(x, 0.25 * (x + n)) == pytest.approx(12.0, abs=1e-6)
  assert rec.si_sdr(x, -3.0 * x) > 200.0   # exact up to float rounding
  assert rec.si_sdr(x, x + 3 * n) < rec.si_sdr(x, x + n)


def test_si_sdr_of_silence_is_undefined():
  x = _bass()
  assert np.isnan(rec.si_sdr(x, np.zeros_like(x)))
  assert np.isnan(rec.si_sdr(np.zeros_like(x), x))


def test_bad_inputs_raise_one_clear_error():
  x = _bass()
  with pytest.raises(BassgenError, match="equal length"):
    rec.si_sdr(x, x[:-10])
  with pytest.raises(BassgenError, match="Downmix"):
    rec.log_mel_l1_db(np.stack([x, x]), np.stack([x, x]), SR)
  bad = x.copy()
  bad[5] = np.nan
  with pytest.raises(BassgenError, match="NaN"):
    rec.multi_resolution_stft_distance(x, bad)
  with pytest.raises(BassgenError, match="too short"):
    rec.multi_resolution_stft_distance(x[:100], x[:100])
  with pytest.raises(BassgenError, match="sample_rate"):
    rec.log_mel_l1_db(x, x, 0)
