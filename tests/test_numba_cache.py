"""librosa's numba cache survives concurrent first runs (issue 14: a corrupted cache made every later
`bassgen sample` segfault), and the CLI keeps it in a folder of bassgen's own."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]

# The reproduction: float32 in one process, float64 in the other.
REPRO = """
import sys, numpy as np, librosa
dt = np.float32 if sys.argv[1] == "a" else np.float64
y = np.random.default_rng(0).standard_normal(16000 * 3).astype(dt)
librosa.onset.onset_detect(y=y, sr=16000, units="time"); librosa.yin(y, fmin=40, fmax=400, sr=16000)
"""
# What every bassgen process does before its first numba-backed librosa call.
WARM = "from bassgen import numba_cache; numba_cache.warm_up()\n"
# bassgen's own numba-backed paths, at the rates and dtypes it meets.
BASSGEN_PATHS = """
from bassgen.evaluation import harmony, pitch, rhythm
for dt in (np.float32, np.float64):
  for sr in (8000, 16000, 44100):
    t = np.arange(2 * sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 55 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(dt)
    pitch.transcribe_bass(x, sr, tracker="pyin")
    rhythm.onset_times(x, sr, backtrack=True)
    rhythm.beat_times(x, sr)
    harmony.mix_chroma(x, sr, np.arange(10) * 0.1)
"""


def _env(cache: pathlib.Path) -> dict:
  env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONWARNINGS="ignore")
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
  return env


def _snapshot(cache: pathlib.Path) -> dict:
  return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*.nb[ic]")}


@pytest.mark.parametrize("attempt", [0, pytest.param(1, marks=pytest.mark.slow),
                                     pytest.param(2, marks=pytest.mark.slow)])
def test_concurrent_first_runs_leave_a_working_cache(tmp_path, attempt):
  """Two fresh processes race through the warm-up on one empty cache; a third then runs the
  issue's reproduction and bassgen's own librosa paths: no crash, and nothing left to compile
  (so no later pair of processes can race on a compile)."""
  del attempt  # each attempt is a fresh race; the bug showed in about 1 of 3
  cache = tmp_path / "numba"
  procs = [subprocess.Popen([sys.executable, "-c", WARM + REPRO, dt], env=_env(cache),
                            stderr=subprocess.PIPE, text=True) for dt in ("a", "b")]
  for p in procs:
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, f"concurrent first run exited {p.returncode}: {err[-2000:]}"
  warmed = _snapshot(cache)
  assert warmed, "the warm-up cached nothing in NUMBA_CACHE_DIR"
  alone = subprocess.run([sys.executable, "-c", REPRO + BASSGEN_PATHS, "a"], env=_env(cache),
                         capture_output=True, text=True, timeout=900)
  assert alone.returncode == 0, f"later run exited {alone.returncode}: {alone.stderr[-2000:]}"
  compiled_later = sorted(k for k, v in _snapshot(cache).items() if warmed.get(k) != v)
  assert not compiled_later, f"compiled after the warm-up (not covered by it): {compiled_later}"


def test_cli_keeps_numba_cache_per_user_unless_set(tmp_path):
  code = ("import os, numba; from bassgen import cli; cli.main(['--help']); "
          "print(os.environ['NUMBA_CACHE_DIR']); print(numba.config.CACHE_DIR)")
  env = _env(tmp_path)
  del env["NUMBA_CACHE_DIR"]
  env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr
  want = str(tmp_path / "xdg" / "bassgen" / "numba")
  assert out.stdout.split("\n")[-3:-1] == [want, want]
  env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.stdout.split("\n")[-3:-1] == [str(tmp_path / "mine")] * 2
