"""The JAX STFT/iSTFT/mel match librosa and invert exactly."""
import librosa
import numpy as np
import pytest

from bassgen import spectral


def _signals():
  rng = np.random.default_rng(0)
  sr = 16000
  t = np.arange(sr) / sr
  return {"noise": rng.standard_normal(sr).astype(np.float32),
          "sine": (0.5 * np.sin(2 * np.pi * 110.0 * t)).astype(np.float32)}


def _rel(a, b):
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("n_fft,hop", [(1024, 256), (512, 128)])
@pytest.mark.parametrize("name", ["noise", "sine"])
def test_stft_matches_librosa(name, n_fft, hop):
  x = _signals()[name]
  ours = np.asarray(spectral.stft(x[None], n_fft, hop))[0]
  ref = librosa.stft(x, n_fft=n_fft, hop_length=hop, window="hann", center=True,
                     pad_mode="constant").T
  assert ours.shape == ref.shape
  assert _rel(ours, ref) <= 1e-4


@pytest.mark.parametrize("name", ["noise", "sine"])
def test_istft_matches_librosa_and_inverts(name):
  x = _signals()[name][:15999]  # a length that is not a multiple of the hop
  n_fft, hop = 1024, 256
  spec = spectral.stft(x[None], n_fft, hop)
  y = np.asarray(spectral.istft(spec, n_fft, hop, length=len(x)))[0]
  assert _rel(y, x) <= 1e-4
  ref = librosa.istft(np.asarray(spec)[0].T, hop_length=hop, n_fft=n_fft, length=len(x))
  assert _rel(y, ref) <= 1e-4


def test_mel_matches_librosa():
  x = _signals()["noise"]
  ours = np.asarray(spectral.mel_power(x[None], 16000, 1024, 256, 80))[0]
  ref = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=1024, hop_length=256, n_mels=80,
                                       pad_mode="constant").T
  assert _rel(ours, ref) <= 1e-4


def test_chroma_frames_name_the_chord_and_ignore_gain():
  sr, hop = 16000, 1024
  t = np.arange(2 * sr) / sr
  # An A major triad (A2, C#3, E3) for one second, then silence.
  chord = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (110.0, 138.59, 164.81))
  x = np.where(t < 1.0, chord, 0.0).astype(np.float32)
  c = np.asarray(spectral.chroma_frames(x[None], sr, hop, 31))[0]
  assert c.shape == (31, 12)
  assert set(np.argsort(c[8])[-3:]) == {9, 1, 4}  # A, C#, E
  assert abs(c[8].sum() - 1.0) < 1e-3
  assert np.all(c[20:] < 1e-3)  # silence gives an empty profile, not amplified noise
  loud = np.asarray(spectral.chroma_frames(10.0 * x[None], sr, hop, 31))[0]
  np.testing.assert_allclose(loud, c, atol=1e-5)
