"""The commands besides `bassgen sample`: reconstruct, train (bad arguments), info, an unknown
command, and `python -m bassgen.main --mode=sample`. Errors a user causes are one line, no trace."""
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from bassgen import cli
from bassgen.config_loading import load_config
from fixtures import make_random_bundle

ROOT = pathlib.Path(__file__).parents[1]
AE = str(ROOT / "configs" / "autoencoder.py")
LDM = str(ROOT / "configs" / "ldm.py")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  return make_random_bundle(tmp_path_factory.mktemp("bundle"))


def _run(args, capsys):
  code = cli.main([str(a) for a in args])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def _one_error_line(err: str) -> str:
  """The single "error: ..." line of a failed command (log lines aside); fails on a traceback."""
  assert "Traceback" not in err, err
  errors = [l for l in err.splitlines() if l.startswith(("error:", "bassgen:"))]
  assert len(errors) == 1, err
  return errors[0]


def test_unknown_command_is_one_line(capsys):
  code, _, err = _run(["smaple", "x.wav"], capsys)
  assert code == 2
  assert len(err.strip().splitlines()) == 1 and "'smaple'" in err and "sample" in err, err


def _param_count(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_info_counts_parameters_and_latent_shape(capsys):
  from bassgen.trainers import autoencoder as ae_trainer
  from bassgen.trainers import ldm as ldm_trainer
  code, out, err = _run(["info", "--config", f"{AE}:runlocal", "--seconds", 1], capsys)
  assert code == 0, err
  cfg = load_config(f"{AE}:runlocal")
  params = _param_count(ae_trainer.build_model(cfg, jax.random.key(0)))
  assert f"{params:,} parameters" in out, out
  spl = cfg.model.hop * 2 ** cfg.model.num_down
  frames = -(-cfg.sample_rate // spl)
  assert f"latent {frames} x {cfg.model.latent_channels} -> {frames * spl} samples" in out, out
  code, out, err = _run(["info", "--config", f"{LDM}:runlocal"], capsys)
  assert code == 0, err
  ldm_cfg = load_config(f"{LDM}:runlocal")
  assert f"{_param_count(ldm_trainer.build_model(ldm_cfg, jax.random.key(1))):,} parameters" in out
  code, _, err = _run(["info", "--config", f"{AE}:tiny"], capsys)
  assert code == 1 and "'tiny'" in _one_error_line(err)


def test_reconstruct_keeps_rate_and_length_and_refuses_to_overwrite(bundle, tmp_path, capsys):
  sr = 11025   # not the model's rate; stereo; a length that is no multiple of anything
  t = np.arange(int(0.77 * sr)) / sr
  x = 0.3 * np.sin(2 * np.pi * 110 * t)
  sf.write(tmp_path / "in.flac", np.stack([x, 0.5 * x], 1).astype(np.float32), sr)
  out = tmp_path / "out.wav"
  args = ["reconstruct", tmp_path / "in.flac", out, "--checkpoint", bundle / "autoencoder"]
  code, stdout, err = _run(args, capsys)
  assert code == 0, err
  y, got_sr = sf.read(out)
  assert got_sr == sr and y.shape == (len(t),) and np.all(np.isfinite(y))
  assert "wrote" in stdout
  before = out.read_bytes()
  code, _, err = _run(args, capsys)
  assert code == 1 and "--overwrite" in _one_error_line(err) and out.read_bytes() == before
  assert _run(args + ["--overwrite"], capsys)[0] == 0
  code, _, err = _run(["reconstruct", tmp_path / "nope.wav", tmp_path / "o.wav", "--checkpoint",
                       bundle / "autoencoder"], capsys)
  assert code == 1 and "nope.wav" in _one_error_line(err)
  code, _, err = _run(["reconstruct", tmp_path / "in.flac", tmp_path / "o.wav", "--checkpoint",
                       tmp_path / "no_model"], capsys)
  assert code == 1 and "no_model" in _one_error_line(err)


@pytest.mark.parametrize("case", ["missing data folder", "unknown variant", "unknown field"])
def test_train_with_bad_arguments_is_one_line(tmp_path, capsys, case):
  work = tmp_path / "work"
  args = {"missing data folder": ["--config", f"{AE}:runlocal", "--workdir", work,
                                  f"data.train_dir={tmp_path / 'nodata'}",
                                  f"data.val_dir={tmp_path / 'nodata'}"],
          "unknown variant": ["--config", f"{AE}:huge", "--workdir", work],
          "unknown field": ["--config", f"{LDM}:runlocal", "--workdir", work, "optim.lrr=1e-3"]}[case]
  code, _, err = _run(["train"] + args, capsys)
  line = _one_error_line(err)
  assert code == 1
  assert {"missing data folder": "nodata", "unknown variant": "'huge'",
          "unknown field": "'optim.lrr'"}[case] in line, line


def _main(args, cwd):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  return subprocess.run([sys.executable, "-m", "bassgen.main"] + [str(a) for a in args], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=600)


def test_main_mode_sample_writes_outputs(bundle, tmp_path):
  t = np.arange(8000) / 8000
  sf.write(tmp_path / "m.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 8000)
  run = _main([f"--config={LDM}:runlocal", "--mode=sample", f"--config.sample.mix={tmp_path / 'm.wav'}",
               f"--config.sample.checkpoint={bundle}", f"--config.sample.out={tmp_path / 'o'}",
               "--config.sample.steps=2"], tmp_path)
  assert run.returncode == 0, run.stderr[-3000:]
  bass, sr = sf.read(tmp_path / "o" / "m.bass.wav")
  assert sr == 8000 and len(bass) == 8000 and np.all(np.isfinite(bass))
  assert (tmp_path / "o" / "index.html").is_file()


@pytest.mark.parametrize("case", ["no mix", "unknown variant", "unknown field", "missing config",
                                  "wrong mode"])
def test_main_with_bad_arguments_is_one_line(tmp_path, case):
  args, says = {
      "no mix": ([f"--config={LDM}:runlocal", "--mode=sample"], "--config.sample.mix"),
      "unknown variant": ([f"--config={LDM}:huge", "--mode=sample"], "'huge'"),
      "unknown field": ([f"--config={LDM}:runlocal", "--mode=sample", "--config.sample.mixx=a.wav"],
                        "--config.sample.mixx"),
      "missing config": (["--config=configs/nope.py", "--mode=sample"], "configs/nope.py"),
      "wrong mode": ([f"--config={AE}:runlocal", "--mode=sample", f"--workdir={tmp_path}"],
                     "--mode='sample'"),
  }[case]
  run = _main(args, tmp_path)
  assert run.returncode == 1, run.stderr[-3000:]
  line = _one_error_line(run.stderr)
  assert says in line, line
  assert not re.search(r"^\s+File \"", run.stderr, re.MULTILINE), run.stderr[-3000:]
