"""Distribution metric: Fréchet distance between sets, with the default or a user's embedding."""
import numpy as np
import pytest

from bassgen.data.audio import save_audio
from bassgen.errors import BassgenError
from bassgen.evaluation import distribution as D
from bassgen.evaluation import pitch as P
from bassgen.evaluation import synthetic as S

SR = 16000


def _line(seed, seconds=4.0, **sound):
  pitches = np.random.default_rng(seed).integers(28, 52, int(seconds * 4))
  notes = [P.Note(0.25 * i, 0.25 * i + 0.22, int(p)) for i, p in enumerate(pitches)]
  return S.bass_line(notes, SR, duration=seconds, **sound)


@pytest.fixture(scope="module")
def set_a():
  return [_line(i) for i in range(5)]


def test_a_set_against_itself_is_zero_and_a_timbre_change_grows(set_a):
  assert D.frechet_audio_distance(set_a, set_a, SR) == 0.0
  same_sound = D.frechet_audio_distance(set_a, [_line(i + 10) for i in range(5)], SR)
  duller = D.frechet_audio_distance(set_a, [_line(i + 10, rolloff=2.0) for i in range(5)], SR)
  dullest = D.frechet_audio_distance(set_a, [_line(i + 10, rolloff=3.0) for i in range(5)], SR)
  assert same_sound < duller < dullest


def test_default_embedding_is_deterministic_and_windowed(set_a):
  e1 = D.stats_embedding(set_a[0], SR)
  assert e1.shape == (3, 78)                      # 4 s: 2 s windows, 1 s hop
  np.testing.assert_array_equal(e1, D.stats_embedding(set_a[0].copy(), SR))
  assert D.stats_embedding(set_a[0][:SR // 2], SR).shape == (1, 78)   # shorter than a window


def test_files_and_arrays_give_the_same_result(set_a, tmp_path):
  paths = [save_audio(tmp_path / f"b{i}.wav", w, SR) for i, w in enumerate(set_a)]
  other = [_line(i + 10, rolloff=2.0) for i in range(5)]
  d_arrays = D.frechet_audio_distance(set_a, other, SR)
  assert D.frechet_audio_distance(paths, other, SR) == pytest.approx(d_arrays, rel=1e-3)


def test_user_embedding_from_a_file_and_a_module(set_a, tmp_path):
  plugin = tmp_path / "my_embedding.py"
  plugin.write_text(
      "import numpy as np\n"
      "def rms_and_peak(wav, sample_rate):\n"
      "  assert sample_rate == 8000\n"
      "  return np.array([np.sqrt(np.mean(wav ** 2)), np.abs(wav).max()])\n"
      "rms_and_peak.sample_rate = 8000\n")
  spec = f"{plugin}:rms_and_peak"
  louder = [2.0 * w for w in set_a]
  assert D.frechet_audio_distance(set_a, set_a, SR, embedding=spec) == 0.0
  assert D.frechet_audio_distance(set_a, louder, SR, embedding=spec) > 0.0
  # The default embedding, named by module path, equals the default.
  named = D.frechet_audio_distance(set_a, louder, SR,
                                   embedding="bassgen.evaluation.distribution:stats_embedding")
  assert named == D.frechet_audio_distance(set_a, louder, SR)


def test_bad_embeddings_raise_one_clear_error(set_a, tmp_path):
  with pytest.raises(BassgenError, match="no such Python file"):
    D.load_embedding(str(tmp_path / "missing.py") + ":f")
  with pytest.raises(BassgenError, match="cannot import module"):
    D.load_embedding("no_such_package_xyz.models:embed")
  with pytest.raises(BassgenError, match="has no function 'nope'"):
    D.load_embedding("bassgen.evaluation.distribution:nope")
  with pytest.raises(BassgenError, match="expected 'stats'"):
    D.load_embedding("vggish")
  with pytest.raises(BassgenError, match="NaN"):
    D.embed(set_a, SR, lambda w, sr: np.array([np.nan, 1.0]))
  with pytest.raises(BassgenError, match="same D"):
    D.embed(set_a, SR, lambda w, sr: np.zeros(1 + int(w[100] > 0)) + len(w))
  with pytest.raises(BassgenError, match="at least 2"):
    D.frechet_audio_distance(set_a[:1], set_a, SR, embedding=lambda w, sr: np.ones(3))
