"""The autoencoder trainer end to end: SIGKILL after a checkpoint, resume, identical result."""
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import numpy as np
import orbax.checkpoint as ocp
import pytest

from bassgen.data import prepare
from test_sources import write_folder_tree

ROOT = pathlib.Path(__file__).parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  base = tmp_path_factory.mktemp("ae_data")
  write_folder_tree(base / "renders", stems_per_track=(("drums", "keys"), ("keys", "pad"),
                                                       ("drums", "guitar")), seconds=2.0)
  prepare.prepare("folder", base / "renders", base / "prepared", sample_rate=8000, split="train",
                  workers=1)
  return base / "prepared"


def _overrides(data_dir, num_steps=6):
  return [f"--config.data.train_dir={data_dir}", f"--config.data.val_dir={data_dir}",
          f"--config.train.num_steps={num_steps}", "--config.train.ckpt_every=2",
          "--config.train.eval_every=4", "--config.train.keep_checkpoints=5",
          "--config.train.stats_batches=2"]


def _run(args, workdir, kill_after_step=None):
  """Runs bassgen.main in a fresh process; optionally SIGKILLs itself right after saving a step."""
  wrapper = textwrap.dedent(f"""
      import os, signal, sys
      from bassgen import checkpointing
      _save = checkpointing.save
      def save(manager, step, *a, **k):
        _save(manager, step, *a, **k)
        if step == {kill_after_step!r}:
          os.kill(os.getpid(), signal.SIGKILL)
      checkpointing.save = save
      from absl import app
      from bassgen import main
      sys.argv = ["bassgen.main"] + {args!r}
      app.run(main.main)
  """)
  cmd = [sys.executable, "-c", wrapper]
  env = dict(os.environ)
  env.pop("PYTEST_CURRENT_TEST", None)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _params_at(workdir: pathlib.Path, step: int):
  state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
  return state


def test_sigkill_then_resume_is_bit_identical(prepared, tmp_path):
  config = [f"--config={ROOT / 'configs' / 'autoencoder.py'}:runlocal"] + _overrides(prepared)
  a, b = tmp_path / "uninterrupted", tmp_path / "killed"

  r = _run(config + [f"--workdir={a}"], a)
  assert r.returncode == 0, r.stderr[-3000:]

  r = _run(config + [f"--workdir={b}"], b, kill_after_step=4)
  assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
  steps = sorted(int(p.name) for p in (b / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [2, 4]  # killed right after the step-4 checkpoint: no later state exists

  r = _run(config + [f"--workdir={b}"], b)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from step 4" in r.stderr

  sa, sb = _params_at(a, 6), _params_at(b, 6)
  leaves_a = sorted(_flatten(sa).items())
  leaves_b = sorted(_flatten(sb).items())
  assert [k for k, _ in leaves_a] == [k for k, _ in leaves_b]
  for (k, x), (_, y) in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=k)
  # The run exported the EMA model with its latent statistics.
  assert (b / "export").is_dir() and (b / "tb").is_dir() and (b / "config.json").is_file()


def _flatten(tree, prefix=""):
  out = {}
  if isinstance(tree, dict):
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}/{k}"))
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      out.update(_flatten(v, f"{prefix}/{i}"))
  else:
    out[prefix] = tree
  return out
