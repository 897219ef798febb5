"""Multi-host training on one machine: two CPU processes x 2 devices, coordinated on localhost over
gloo (`python -m bassgen.main --distributed --coordinator=... --num-processes=2 --process-id=i`),
train 3 steps of each `runlocal` trainer exactly like one process with 4 devices:

- the two processes feed disjoint rows, which together are the single process's global batch;
- the losses (train and validation) equal the single-process run's within 1e-5;
- the checkpoint they write restores in one process (8 devices here) to the parameters they
  exported, and a single-process run resumes from it and continues like the uninterrupted one.
"""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from bassgen import checkpointing, sharding
from bassgen.config_loading import load_config
from bassgen.data import prepare
from bassgen.trainers import autoencoder as ae_trainer
from bassgen.trainers import ldm as ldm_trainer
from fixtures import export_random_autoencoder
from test_sources import write_folder_tree

ROOT = pathlib.Path(__file__).parents[1]
STEPS = 3

# Runs bassgen.main after wrapping sharding.global_batch to log a checksum of each row this
# process feeds (its 'target' rows), one JSON list per call, to $BATCH_LOG.
_WRAPPER = textwrap.dedent("""
    import json, os, sys, zlib
    import numpy as np
    from bassgen import sharding
    _global_batch = sharding.global_batch
    _log = open(os.environ["BATCH_LOG"], "a")
    def global_batch(local, mesh):
      _log.write(json.dumps([zlib.crc32(np.ascontiguousarray(r).tobytes())
                             for r in local["target"]]) + "\\n")
      _log.flush()
      return _global_batch(local, mesh)
    sharding.global_batch = global_batch
    from bassgen.data import latents
    _track_labels = latents.track_labels
    def track_labels(track, *args, **kwargs):   # called once per track this process encodes
      _log.write(json.dumps({"encoded": track["file"]}) + "\\n")
      _log.flush()
      return _track_labels(track, *args, **kwargs)
    latents.track_labels = track_labels
    from absl import app
    from bassgen import main
    sys.argv = ["bassgen.main"] + json.loads(os.environ["MAIN_ARGS"])
    app.run(main.main, flags_parser=main.parse_flags)
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(args: list[str], devices: int, log: pathlib.Path) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu", BATCH_LOG=str(log), MAIN_ARGS=json.dumps(args),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.pop("PYTEST_CURRENT_TEST", None)
  return subprocess.Popen([sys.executable, "-c", _WRAPPER], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait(procs: dict[str, subprocess.Popen]) -> None:
  outputs = {}
  for name, p in procs.items():
    try:
      outputs[name] = p.communicate(timeout=3600)[0]
    except subprocess.TimeoutExpired:
      for q in procs.values():
        q.kill()
      raise
  for name, p in procs.items():
    assert p.returncode == 0, f"{name} failed:\n{outputs[name][-4000:]}"


def _train_runs(tmp: pathlib.Path, config_args: list[str]) -> dict[str, pathlib.Path]:
  """The 2-process run (p0, p1 share `two/`), the 1-process 4-device run (`one/`), then a
  1-process run (`resumed/`) that continues the 2-process run's step-2 checkpoint."""
  port = _free_port()
  two, one, resumed = tmp / "two", tmp / "one", tmp / "resumed"
  dist = ["--distributed", f"--coordinator=127.0.0.1:{port}", "--num-processes=2"]
  _wait({
      "process 0": _start(config_args + [f"--workdir={two}", *dist, "--process-id=0"], 2,
                          tmp / "p0.jsonl"),
      "process 1": _start(config_args + [f"--workdir={two}", *dist, "--process-id=1"], 2,
                          tmp / "p1.jsonl"),
      "single process": _start(config_args + [f"--workdir={one}"], 4, tmp / "one.jsonl"),
  })
  shutil.copytree(two, resumed, ignore=shutil.ignore_patterns("export", "tb", "metrics.jsonl"))
  shutil.rmtree(resumed / "checkpoints" / str(STEPS))
  _wait({"resumed": _start(config_args + [f"--workdir={resumed}"], 4, tmp / "resumed.jsonl")})
  return {"two": two, "one": one, "resumed": resumed}


def _rows(path: pathlib.Path) -> list[list[int]]:
  lines = [json.loads(line) for line in path.read_text().splitlines()]
  return [x for x in lines if isinstance(x, list)]


def _encoded(path: pathlib.Path) -> list[str]:
  """The tracks this process encoded into the latent cache (diffusion runs)."""
  lines = [json.loads(line) for line in path.read_text().splitlines()]
  return [x["encoded"] for x in lines if isinstance(x, dict)]


def _metrics(workdir: pathlib.Path) -> dict[int, dict[str, float]]:
  out = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    m = json.loads(line)
    out.setdefault(m.pop("step"), {}).update(
        {k: v for k, v in m.items() if "loss" in k or k.startswith("val/")})
  return out


def _restore(trainer, cfg, workdir: pathlib.Path, step: int) -> dict:
  s = trainer.setup(cfg, sharding.mesh_from_config(cfg.mesh))   # all 8 devices of this process
  manager = checkpointing.make_manager(workdir / "checkpoints", read_only=True)
  state, _ = checkpointing.restore(manager, s.abstract_state, step=step)
  return jax.device_get(state)


def _check(tmp: pathlib.Path, runs: dict[str, pathlib.Path], trainer, cfg) -> None:
  # 1. Each process fed its own rows: disjoint, and together the single process's global batch
  #    (train, validation and statistics batches alike), in the same order.
  p0, p1, one = _rows(tmp / "p0.jsonl"), _rows(tmp / "p1.jsonl"), _rows(tmp / "one.jsonl")
  assert len(p0) == len(p1) == len(one) >= STEPS
  for a, b, whole in zip(p0, p1, one):
    assert len(a) == len(b) == len(whole) // 2
    assert not set(a) & set(b), "the two processes read the same example"
    assert a + b == whole
  # 2. The same losses as one process with 4 devices; only process 0 wrote metrics and TensorBoard.
  m2, m1 = _metrics(runs["two"]), _metrics(runs["one"])
  assert m2.keys() == m1.keys() and any("val/" in k for m in m2.values() for k in m)
  for step in m1:
    for k in m1[step]:
      np.testing.assert_allclose(m2[step][k], m1[step][k], rtol=1e-5, atol=1e-5, err_msg=k)
  lines = [len((runs[r] / "metrics.jsonl").read_text().splitlines()) for r in ("two", "one")]
  assert lines[0] == lines[1] and len(list((runs["two"] / "tb").iterdir())) == 1
  # 3. The 2-process checkpoint restores in this single process (8 devices) to exactly the
  #    parameters the run exported, and within 1e-5 of the single-process run's.
  state2 = _restore(trainer, cfg, runs["two"], STEPS)
  exported = checkpointing.load_params(runs["two"] / "export", state2["ema"])
  for a, b in zip(jax.tree.leaves(state2["ema"]), jax.tree.leaves(exported)):
    np.testing.assert_array_equal(a, b)
  state1 = _restore(trainer, cfg, runs["one"], STEPS)
  assert int(state2["step"]) == int(state1["step"]) == STEPS
  for a, b in zip(jax.tree.leaves(state2["params"]), jax.tree.leaves(state1["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # 4. A single-process run resumed from the 2-process step-2 checkpoint reads the batch the
  #    uninterrupted run read at step 3 and ends with the same parameters.
  resumed = _rows(tmp / "resumed.jsonl")
  assert resumed[0] == one[STEPS - 1]
  state_r = _restore(trainer, cfg, runs["resumed"], STEPS)
  for a, b in zip(jax.tree.leaves(state_r["params"]), jax.tree.leaves(state1["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  base = tmp_path_factory.mktemp("distributed_data")
  write_folder_tree(base / "renders", stems_per_track=(("drums", "keys"), ("keys", "pad"),
                                                       ("drums", "guitar"), ("pad", "keys")),
                    seconds=3.0)
  prepare.prepare("folder", base / "renders", base / "prepared", sample_rate=8000, split="train",
                  workers=1, log=lambda _: None)
  return base


def _common(prepared_dir: pathlib.Path) -> list[str]:
  return [f"--config.data.train_dir={prepared_dir}", f"--config.data.val_dir={prepared_dir}",
          f"--config.train.num_steps={STEPS}", "--config.train.log_every=1",
          f"--config.train.eval_every={STEPS}", "--config.train.ckpt_every=1",
          "--config.train.keep_checkpoints=5"]


@pytest.mark.slow
def test_two_processes_train_the_autoencoder_like_one(prepared, tmp_path):
  config = f"{ROOT / 'configs' / 'autoencoder.py'}:runlocal"
  args = [f"--config={config}", *_common(prepared / "prepared"), "--config.train.stats_batches=1"]
  runs = _train_runs(tmp_path, args)
  _check(tmp_path, runs, ae_trainer, load_config(config))


@pytest.mark.slow
def test_two_processes_train_the_diffusion_model_like_one(prepared, tmp_path):
  ae = export_random_autoencoder(tmp_path / "ae")
  config = f"{ROOT / 'configs' / 'ldm.py'}:runlocal"
  runs = _train_runs(tmp_path, [f"--config={config}", *_common(prepared / "prepared"),
                                f"--config.autoencoder_checkpoint={ae}"])
  _check(tmp_path, runs, ldm_trainer, load_config(config))
  # The latent cache was built in parallel: each process encoded its own half of the tracks
  # (train and validation caches), together every track once, as the single process did alone.
  p0, p1, one = (_encoded(tmp_path / f"{n}.jsonl") for n in ("p0", "p1", "one"))
  assert p0 and p1 and not set(p0) & set(p1) and len(p0) + len(p1) == len(one)
  assert sorted(p0 + p1) == sorted(one)
