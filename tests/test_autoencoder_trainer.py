"""The autoencoder trainer end to end: SIGKILL after a checkpoint, or SIGTERM (preemption) at any
step, then resume: the result is bit-identical to an uninterrupted run."""
import os
import pathlib
import signal

import pytest

import fixtures
from bassgen.data import prepare
from bassgen.trainers import common
from test_sources import write_folder_tree

ROOT = pathlib.Path(__file__).parents[1]
CONFIG = f"--config={ROOT / 'configs' / 'autoencoder.py'}:runlocal"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  base = tmp_path_factory.mktemp("ae_data")
  write_folder_tree(base / "renders", stems_per_track=(("drums", "keys"), ("keys", "pad"),
                                                       ("drums", "guitar")), seconds=2.0)
  prepare.prepare("folder", base / "renders", base / "prepared", sample_rate=8000, split="train",
                  workers=1)
  return base / "prepared"


def _overrides(data_dir, num_steps=6, ckpt_every=2, eval_every=4):
  return [f"--config.data.train_dir={data_dir}", f"--config.data.val_dir={data_dir}",
          f"--config.train.num_steps={num_steps}", f"--config.train.ckpt_every={ckpt_every}",
          f"--config.train.eval_every={eval_every}", "--config.train.keep_checkpoints=5",
          "--config.train.stats_batches=2"]


def test_sigkill_then_resume_is_bit_identical(prepared, tmp_path):
  config = [CONFIG] + _overrides(prepared)
  a, b = tmp_path / "uninterrupted", tmp_path / "killed"

  r = fixtures.run_main(config + [f"--workdir={a}"])
  assert r.returncode == 0, r.stderr[-3000:]

  fixtures.sigkill_after_checkpoint(config, b, 4, want_steps=[2, 4])
  fixtures.resume_equals(config, b, a, from_step=4, num_steps=6)
  # The run exported the EMA model with its latent statistics.
  assert (b / "tb").is_dir() and (b / "config.json").is_file()


@pytest.mark.slow
def test_sigterm_checkpoints_exits_0_and_resumes_bit_identical(prepared, tmp_path):
  """A preemption notice mid-run: a checkpoint at the next step boundary (the only one: periodic
  checkpoints are off), exit status 0, no export; the same command finishes the run exactly."""
  num_steps = 10
  config = [CONFIG] + _overrides(prepared, num_steps=num_steps, ckpt_every=1000, eval_every=1000)
  a, b = tmp_path / "uninterrupted", tmp_path / "preempted"

  r = fixtures.run_main(config + [f"--workdir={a}"])
  assert r.returncode == 0, r.stderr[-3000:]
  assert fixtures.checkpoint_steps(a) == [num_steps]

  step, _ = fixtures.sigterm_in_training(config, b, num_steps, "autoencoder")
  fixtures.resume_equals(config, b, a, from_step=step, num_steps=num_steps)


def test_preemption_flag_and_handler_restored():
  """The handler only records the notice; the previous handler is back afterwards."""
  seen = []
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
  try:
    with common.Preemption() as preemption:
      assert not preemption.requested and not preemption.stop_at(1)
      os.kill(os.getpid(), signal.SIGTERM)
      assert preemption.requested and preemption.stop_at(2)
      assert seen == []                    # our handler took it, not the previous one
    os.kill(os.getpid(), signal.SIGTERM)   # restored: the previous handler gets the next one
    assert seen == [signal.SIGTERM]
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_decoder_only_fine_tune_keeps_the_encoder_and_its_latent_statistics(prepared, tmp_path):
  """`train.freeze_encoder`: the decoder learns, the encoder's weights and the exported latent
  statistics are `init_from`'s exactly (so a latent cache made with it stays valid)."""
  import jax
  import numpy as np
  from flax import nnx
  from bassgen.codec import Codec
  from bassgen.config_loading import load_config
  from bassgen.errors import BassgenError
  from bassgen.trainers import autoencoder as trainer
  cfg = load_config(f"{ROOT / 'configs' / 'autoencoder.py'}:runlocal")
  base, c = tmp_path / "base", cfg.model.latent_channels
  params = nnx.to_pure_dict(nnx.state(trainer.build_model(cfg, jax.random.key(0))))
  # Statistics that a re-estimate would not give.
  trainer.export_model(base, cfg, params, np.full(c, 0.25), np.full(c, 2.0), 0)
  cfg.data.train_dir = cfg.data.val_dir = str(prepared)
  cfg.train.stats_batches = 2
  cfg.train.freeze_encoder = True
  with pytest.raises(BassgenError, match="init_from"):
    trainer.train_and_evaluate(cfg, tmp_path / "no_init")
  cfg.train.init_from = str(base)
  trainer.train_and_evaluate(cfg, tmp_path / "run")
  before, after = Codec.load(base), Codec.load(tmp_path / "run" / "export")
  moved = {part: max(float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))
                     for a, b in zip(jax.tree.leaves(after.params[part]),
                                     jax.tree.leaves(before.params[part])))
           for part in ("encoder", "decoder")}
  assert moved["encoder"] == 0.0 and moved["decoder"] > 1e-4, moved
  np.testing.assert_array_equal(after.latent_mean, before.latent_mean)
  np.testing.assert_array_equal(after.latent_std, before.latent_std)
