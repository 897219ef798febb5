"""Shared test helpers: a bundle of runlocal models with random weights, exported like trained ones
(the CLI behaviour under test does not depend on training); train steps on several meshes and
checks of their shardings; trainer processes killed, preempted and resumed."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
from flax import nnx

from bassgen.config_loading import load_config
from bassgen.trainers import autoencoder as ae_trainer
from bassgen.trainers import ldm as ldm_trainer

ROOT = pathlib.Path(__file__).parents[1]


def export_random_autoencoder(directory: pathlib.Path) -> pathlib.Path:
  """Exports a runlocal autoencoder with random weights (latent stats 0 / 1) to `directory`."""
  ae_cfg = load_config(f"{ROOT / 'configs' / 'autoencoder.py'}:runlocal")
  params = nnx.to_pure_dict(nnx.state(ae_trainer.build_model(ae_cfg, jax.random.key(0))))
  c = ae_cfg.model.latent_channels
  ae_trainer.export_model(directory, ae_cfg, params, np.zeros(c), np.ones(c), 0)
  return directory


def make_random_bundle(base: pathlib.Path, **ldm_overrides) -> pathlib.Path:
  """Writes base/autoencoder and base/ldm (runlocal configs, random weights); returns base."""
  export_random_autoencoder(base / "autoencoder")
  cfg = load_config(f"{ROOT / 'configs' / 'ldm.py'}:runlocal")
  for k, v in ldm_overrides.items():
    cfg.model[k] = v
  model = ldm_trainer.build_model(cfg, jax.random.key(1))
  ldm_trainer.export_model(base / "ldm", cfg, nnx.to_pure_dict(nnx.state(model, nnx.Param)), 0)
  return base


def make_ldm_data(base: pathlib.Path) -> pathlib.Path:
  """base/ae (a random runlocal autoencoder export) and base/prepared (4 short tracks at 8 kHz):
  what the diffusion trainer needs to build its latent cache and train. Returns base."""
  from bassgen.data import prepare  # pylint: disable=g-import-not-at-top
  from test_sources import write_folder_tree  # pylint: disable=g-import-not-at-top

  export_random_autoencoder(base / "ae")
  write_folder_tree(base / "renders", stems_per_track=(("drums", "keys"), ("keys", "pad"),
                                                       ("drums", "guitar"), ("pad", "keys")),
                    seconds=3.0)
  prepare.prepare("folder", base / "renders", base / "prepared", sample_rate=8000, split="train",
                  workers=1)
  return base


# --- Several steps on several meshes -----------------------------------------------------------

def train_steps(trainer, cfg, mesh, batches, key=0):
  """(initial params, final state, per-step metrics, the jitted step, the live final state) of
  `len(batches)` train steps of `trainer` (autoencoder or ldm module) on `mesh`."""
  from bassgen import sharding  # pylint: disable=g-import-not-at-top

  s = trainer.setup(cfg, mesh)
  state = trainer.create_state(cfg, s, jax.random.key(key))
  init = jax.tree.map(np.array, jax.device_get(state["params"]))  # a copy: the state is donated
  step = trainer.make_train_step(cfg, s)
  metrics = []
  for b in batches:
    state, m = step(state, sharding.global_batch(b, mesh), jax.random.key(1))
    metrics.append(m)
  return init, jax.device_get(state), jax.device_get(metrics), step, state


def _assert_leaves_close(got, want, tol: float, what: str, relative: bool,
                         ignore: tuple[str, ...]) -> None:
  assert jax.tree.structure(got) == jax.tree.structure(want), what
  paths = [jax.tree_util.keystr(k) for k, _ in jax.tree.leaves_with_path(want)]
  group = lambda key: key[:key.find("['")] if "['" in key else key   # e.g. "[1][0].nu"
  peak: dict[str, float] = {}
  for key, b in zip(paths, jax.tree.leaves(want)):
    peak[group(key)] = max(peak.get(group(key), 0.0), float(np.max(np.abs(b), initial=0.0)))
  for key, a, b in zip(paths, jax.tree.leaves(got), jax.tree.leaves(want)):
    if key.endswith(ignore):
      continue
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-3 * peak[group(key)]) if relative else 1.0
    err = float(np.max(np.abs(a - b), initial=0.0))
    assert err <= tol * scale, f"{what}{key}: max |diff| {err:.3g}, allowed {tol * scale:.3g}"


def assert_states_close(got: dict, want: dict, tol: float, what: str,
                        ignore: tuple[str, ...] = ()) -> None:
  """Train states {step, params, ema, opt} equal within `tol`: parameters and EMA (weights of
  order one) absolutely; Adam's moments (down to 1e-8) relative to each leaf's largest value, or
  to 1e-3 of that moment's largest value in the model if more. Leaves whose path ends with one of
  `ignore` (parameters the loss does not depend on) are skipped."""
  assert int(got["step"]) == int(want["step"]), what
  for name, relative in (("params", False), ("ema", False), ("opt", True)):
    _assert_leaves_close(got[name], want[name], tol, f"{what} {name}", relative, ignore)


def expected_param_specs(trainer, cfg, mesh):
  """Each parameter's mesh PartitionSpec as the config's logical-axis rules say, worked out here
  from the layers' logical names: a named axis goes to the mesh axis its rule names, unless the
  mesh axis does not divide that dimension (then the dimension is replicated); a parameter of
  fewer than `mesh.min_shard_size` elements is replicated whole."""
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  model = nnx.eval_shape(lambda: trainer.build_model(cfg, jax.random.key(0)))
  state = nnx.state(model, nnx.Param)
  names = nnx.to_pure_dict(nnx.get_partition_spec(state))
  shapes = jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(state))
  rules = dict(cfg.mesh.rules)

  def spec(logical, shape):
    if int(np.prod(shape)) < cfg.mesh.min_shard_size:
      return P()
    out = []
    for dim, name in zip(shape, tuple(logical) + (None,) * (len(shape) - len(logical))):
      axis = rules.get(name) if name is not None else None
      out.append(axis if axis is not None and dim % mesh.shape[axis] == 0 else None)
    return P(*out)

  return jax.tree.map(spec, names, shapes, is_leaf=lambda x: isinstance(x, P))


def assert_shardings_follow_rules(trainer, cfg, mesh, live_state) -> int:
  """The live state's arrays are laid out as the rules say: parameters, EMA and Adam moments by
  `expected_param_specs` (each device holding the matching slice), the step and the optimizer's
  counters replicated. Returns how many parameters are split over a mesh axis of size > 1."""
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

  want = expected_param_specs(trainer, cfg, mesh)
  split = 0
  for (path, spec), p, e in zip(jax.tree.leaves_with_path(want, is_leaf=lambda x: isinstance(x, P)),
                                jax.tree.leaves(live_state["params"]),
                                jax.tree.leaves(live_state["ema"])):
    for arr in (p, e):
      assert arr.sharding.is_equivalent_to(NamedSharding(mesh, spec), arr.ndim), (
          f"{jax.tree_util.keystr(path)}: sharded {arr.sharding.spec}, the rules say {spec}")
      local = tuple(d // (mesh.shape[a] if a else 1)
                    for d, a in zip(arr.shape, tuple(spec) + (None,) * arr.ndim))
      assert {s.data.shape for s in arr.addressable_shards} == {local}, jax.tree_util.keystr(path)
    split += any(a is not None and mesh.shape[a] > 1 for a in spec)
  # Adam's moments follow their parameters; its step counters are replicated.
  param_specs = {jax.tree_util.keystr(k): v.sharding for k, v in
                 jax.tree.leaves_with_path(live_state["params"])}
  for path, leaf in jax.tree.leaves_with_path(live_state["opt"]):
    key = jax.tree_util.keystr(path)
    match = [s for k, s in param_specs.items() if key.endswith(k)]
    if match and leaf.ndim:
      assert leaf.sharding.is_equivalent_to(match[0], leaf.ndim), key
    else:
      assert leaf.sharding.is_fully_replicated, key
  assert live_state["step"].sharding.is_fully_replicated
  return split


# --- Trainer processes: kill, preempt, resume ---------------------------------------------------

def _env() -> dict:
  env = dict(os.environ)   # 8 fake CPU devices (conftest) in the child too
  env.pop("PYTEST_CURRENT_TEST", None)
  return env


def run_main(args: list[str], prelude: str = "", timeout: float = 1800
             ) -> subprocess.CompletedProcess:
  """`python -m bassgen.main ARGS` in a fresh process, after running `prelude` (Python code that
  may patch the project, e.g. to kill the process at a chosen point)."""
  code = f"{prelude}\nimport runpy, sys\nsys.argv = ['bassgen.main'] + {list(args)!r}\n" \
         "runpy.run_module('bassgen.main', run_name='__main__', alter_sys=True)\n"
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=timeout)


def kill_after_save(step: int, sig: int = signal.SIGKILL) -> str:
  """A `run_main` prelude: the process sends itself `sig` right after saving checkpoint `step`."""
  return textwrap.dedent(f"""
      import os
      from bassgen import checkpointing
      _save = checkpointing.save
      def save(manager, at_step, *a, **k):
        _save(manager, at_step, *a, **k)
        if at_step == {step}:
          os.kill(os.getpid(), {int(sig)})
      checkpointing.save = save
  """)


def sigterm_when_logged(args: list[str], workdir: pathlib.Path, step: int, timeout: float = 1800
                        ) -> tuple[int, str]:
  """Starts `python -m bassgen.main ARGS`, sends it SIGTERM once `workdir/metrics.jsonl` shows
  `step` (training is under way), waits for it to exit. Returns (exit status, stderr)."""
  log = workdir.parent / f"{workdir.name}.stderr"
  workdir.parent.mkdir(parents=True, exist_ok=True)
  with open(log, "w", encoding="utf-8") as err:
    proc = subprocess.Popen([sys.executable, "-m", "bassgen.main", *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + timeout
    try:
      while proc.poll() is None and time.time() < deadline:
        if logged_steps(workdir) and max(logged_steps(workdir)) >= step:
          proc.send_signal(signal.SIGTERM)
          break
        time.sleep(0.05)
      rc = proc.wait(timeout=max(deadline - time.time(), 1))
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return rc, log.read_text(encoding="utf-8")


def logged_steps(workdir: pathlib.Path) -> list[int]:
  path = workdir / "metrics.jsonl"
  if not path.is_file():
    return []
  lines = path.read_text(encoding="utf-8").splitlines()
  return [json.loads(l)["step"] for l in lines if l.endswith("}")]


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  d = workdir / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def checkpoint_leaves(workdir: pathlib.Path, step: int) -> dict[str, np.ndarray]:
  """The saved train state at `step` (parameters, EMA, optimizer, step) as {path: array}."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree.leaves_with_path(state)}


def assert_same_checkpoint(a: pathlib.Path, b: pathlib.Path, step: int) -> None:
  """Bit-identical train states at `step` in workdirs `a` and `b`."""
  la, lb = checkpoint_leaves(a, step), checkpoint_leaves(b, step)
  assert sorted(la) == sorted(lb)
  assert len(la) > 10
  for k, x in la.items():
    np.testing.assert_array_equal(x, lb[k], err_msg=k)


def sigkill_after_checkpoint(args: list[str], workdir: pathlib.Path, step: int,
                             want_steps: list[int]) -> None:
  """Runs `python -m bassgen.main ARGS --workdir=WORKDIR`, killed (SIGKILL) right after it saved
  checkpoint `step`; `want_steps` are the checkpoints it left."""
  r = run_main(args + [f"--workdir={workdir}"], prelude=kill_after_save(step))
  assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
  assert checkpoint_steps(workdir) == want_steps


def sigterm_in_training(args: list[str], workdir: pathlib.Path, num_steps: int,
                        name: str) -> tuple[int, str]:
  """SIGTERM once training logged step 2 (periodic checkpoints off): exit status 0, one
  checkpoint at the next step boundary, `name: stopped at step N after SIGTERM`, no export.
  Returns (N, stderr)."""
  rc, err = sigterm_when_logged(args + [f"--workdir={workdir}"], workdir, step=2)
  assert rc == 0, err[-3000:]
  steps = checkpoint_steps(workdir)
  assert len(steps) == 1 and 2 <= steps[0] < num_steps, (steps, err[-3000:])
  assert f"{name}: stopped at step {steps[0]} after SIGTERM" in err
  assert not (workdir / "export").exists()
  return steps[0], err


def resume_equals(args: list[str], workdir: pathlib.Path, reference: pathlib.Path,
                  from_step: int, num_steps: int) -> None:
  """The same command again resumes from checkpoint `from_step`, ends bit-identical to the
  uninterrupted run in `reference` at `num_steps`, and exports."""
  r = run_main(args + [f"--workdir={workdir}"])
  assert r.returncode == 0, r.stderr[-3000:]
  assert f"resumed from step {from_step}" in r.stderr
  assert_same_checkpoint(reference, workdir, num_steps)
  assert (workdir / "export").is_dir()


def assert_notes_match(notes: list, want: list) -> None:
  """Transcribed notes are `want`: the same pitches in order (a repeated note stays two notes),
  onsets within 30 ms, offsets within 80 ms, valid MIDI velocities."""
  import pytest  # pylint: disable=g-import-not-at-top

  assert [n.pitch for n in notes] == [n.pitch for n in want]
  for got, ref in zip(notes, want):
    assert got.onset == pytest.approx(ref.onset, abs=0.03)
    assert got.offset == pytest.approx(ref.offset, abs=0.08)
    assert 1 <= got.velocity <= 127
