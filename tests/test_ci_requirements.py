"""BASSGEN_REQUIRE_EXTRAS (set by .ci/run): an extra CI asked for that is missing stops the test run
instead of silently skipping the tests that need it."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]


def _collect(require: str, path: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, BASSGEN_REQUIRE_EXTRAS=require, PATH=path)
  return subprocess.run([sys.executable, "-m", "pytest", "-q", "--co", "tests/test_eval_rhythm.py"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_required_extra_that_is_missing_fails_the_run(tmp_path):
  run = _collect("chromium", str(tmp_path))   # an empty PATH: no browser to find
  assert run.returncode != 0
  assert "BASSGEN_REQUIRE_EXTRAS asks for chromium" in run.stdout + run.stderr


def test_unknown_extra_is_an_error_and_none_required_runs(tmp_path):
  run = _collect("chromiun", str(tmp_path))
  assert run.returncode != 0 and "unknown chromiun" in run.stdout + run.stderr
  assert _collect("", str(tmp_path)).returncode == 0


def test_make_installs_again_when_the_extras_change(tmp_path):
  """A venv installed with one set of extras gets `pip install` again when EXTRAS asks for more."""
  venv = tmp_path / "venv"
  (venv / "bin").mkdir(parents=True)
  for stamp in (".installed", ".installed-dev"):   # today's stamp and the old name, both fresh
    (venv / stamp).touch()

  def planned(extras):
    return subprocess.run(["make", "-n", "-C", str(ROOT), "test", f"VENV={venv}", f"EXTRAS={extras}"],
                          capture_output=True, text=True, timeout=60, check=True).stdout

  assert "pip install" not in planned("dev")
  assert 'pip install --quiet -e ".[dev,tfds]"' in planned("dev,tfds")
