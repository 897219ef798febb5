"""The diffusion trainer end to end, interrupted: SIGKILL after a checkpoint, SIGTERM (preemption)
during the latent-cache build and during training; every resumed run ends bit-identical to an
uninterrupted one, and the latent cache is continued, not rebuilt."""
import pathlib
import textwrap

import pytest

import fixtures
from bassgen.data import latents

# Several trainer processes each (minutes on 2 cores): run with `make test-slow`.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).parents[1]
CONFIG = f"--config={ROOT / 'configs' / 'ldm.py'}:runlocal"
NUM_STEPS = 8


def _config(base: pathlib.Path, ckpt_every: int) -> list[str]:
  return [CONFIG, f"--config.autoencoder_checkpoint={base / 'ae'}",
          f"--config.data.train_dir={base / 'prepared'}",
          f"--config.data.val_dir={base / 'prepared'}", f"--config.train.num_steps={NUM_STEPS}",
          f"--config.train.ckpt_every={ckpt_every}", "--config.train.eval_every=4",
          "--config.train.keep_checkpoints=10"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return fixtures.make_ldm_data(tmp_path_factory.mktemp("ldm_resume"))


@pytest.fixture(scope="module")
def uninterrupted(data):
  """One run straight through (checkpoints at 2, 4, 6, 8), the reference for the others."""
  workdir = data / "uninterrupted"
  r = fixtures.run_main(_config(data, ckpt_every=2) + [f"--workdir={workdir}"])
  assert r.returncode == 0, r.stderr[-3000:]
  assert fixtures.checkpoint_steps(workdir) == [2, 4, 6, 8]
  return workdir


def test_sigkill_then_resume_is_bit_identical(data, uninterrupted, tmp_path):
  config = _config(data, ckpt_every=2)
  b = tmp_path / "killed"
  fixtures.sigkill_after_checkpoint(config, b, 4, want_steps=[2, 4])
  fixtures.resume_equals(config, b, uninterrupted, from_step=4, num_steps=NUM_STEPS)


# SIGTERM to itself when the latent-cache build starts its second track.
_SIGTERM_AT_SECOND_TRACK = textwrap.dedent("""
    import os, signal
    from bassgen.data import records
    _read, _calls = records.read_track, []
    def read_track(*a, **k):
      _calls.append(1)
      if len(_calls) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
      return _read(*a, **k)
    records.read_track = read_track
""")


def test_sigterm_in_cache_build_and_in_training_resume_bit_identical(data, uninterrupted,
                                                                     tmp_path):
  """SIGTERM while caching latents: the track being encoded is finished, the build stops there,
  exit 0. The next launch encodes only the missing tracks (same bytes as an uninterrupted build)
  and trains; SIGTERM mid-training: a checkpoint at the next step boundary (periodic checkpoints
  are off), exit 0, no export. The third launch ends bit-identical to the uninterrupted run."""
  config = _config(data, ckpt_every=1000)
  b = tmp_path / "preempted"
  tracks = b / "latents" / "train" / "tracks"

  r = fixtures.run_main(config + [f"--workdir={b}"], prelude=_SIGTERM_AT_SECOND_TRACK)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "latent cache: stopped after SIGTERM" in r.stderr
  first = sorted(tracks.glob("*.array_record"))
  assert len(first) == 2                                  # stopped at a track boundary
  assert not list(tracks.glob(".*.tmp"))                  # nothing half-written
  assert not (b / "latents" / "train" / latents.INDEX_NAME).exists()
  assert fixtures.checkpoint_steps(b) == []
  stamps = {p.name: p.stat().st_mtime_ns for p in first}

  step, err = fixtures.sigterm_in_training(config, b, NUM_STEPS, "latent diffusion")
  # The build continued: the two finished tracks were not encoded again.
  assert {p.name: p.stat().st_mtime_ns for p in first} == stamps
  train_log = err.split("caching val")[0]
  assert "[3/4]" in train_log and "[4/4]" in train_log and "[2/4]" not in train_log
  for split in ("train", "val"):
    mine = sorted((b / "latents" / split / "tracks").glob("*.array_record"))
    theirs = sorted((uninterrupted / "latents" / split / "tracks").glob("*.array_record"))
    assert [p.name for p in mine] == [p.name for p in theirs] and len(mine) == 4
    for x, y in zip(mine, theirs):
      assert x.read_bytes() == y.read_bytes(), x
  fixtures.resume_equals(config, b, uninterrupted, from_step=step, num_steps=NUM_STEPS)
