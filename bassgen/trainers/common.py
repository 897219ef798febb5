"""The one training loop, and what it is made of.

A model brings a `Task` (its network, `loss_fn`, `eval_fn`, data and export; see
`trainers/autoencoder.py` and `trainers/ldm.py`); everything else is here and shared:

    s = setup(task, mesh)                   # abstract model, optimizer, shardings
    state = task.init_state(s, key)         # {step, params, ema, opt}, created already sharded
    step_fn = make_train_step(task, s)      # pure, jitted once, state donated
    state, metrics = step_fn(state, batch, key)

`train_and_evaluate(task, workdir)` runs the host loop: resume from the latest checkpoint, fetch
step t-1's metrics after dispatching step t, stop on NaN, evaluate and checkpoint on their
cadence, stop after `train.max_minutes`, checkpoint and return on a preemption notice (SIGTERM),
and export the EMA model at the end.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
import signal
import threading
import time
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.experimental import multihost_utils

from bassgen import checkpointing, sharding
from bassgen.errors import BassgenError
from bassgen.models import layers
from bassgen.trainers.writers import MetricWriter, Progress


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with linear warmup, cosine decay and global-norm clipping."""
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
      decay_steps=max(num_steps, cfg.warmup_steps + 1), end_value=cfg.lr * cfg.end_lr_factor)
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm),
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))
  return tx, schedule


def ema_update(ema: Any, params: Any, decay: float, step: jax.Array) -> Any:
  """EMA with warm-up (decay grows as (1 + t) / (10 + t)), initialised to the parameters."""
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  # e + (1 - d)(p - e): exactly e wherever p == e (a frozen part stays bit-identical).
  return jax.tree.map(lambda e, p: e + (1.0 - d) * (p - e), ema, params)


def tree_norm(tree: Any) -> jax.Array:
  return optax.tree.norm(tree)


def write_config(cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2, sort_keys=True))


def check_finite(metrics: dict[str, float], step: int) -> None:
  bad = [k for k, v in metrics.items() if not math.isfinite(v)]
  if bad:
    raise BassgenError(
        f"training diverged at step {step}: {', '.join(sorted(bad))} became NaN/Inf. "
        "Lower --config.optim.lr or --config.optim.clip_norm and resume from the last checkpoint.")


class Preemption:
  """A preemption notice (SIGTERM by default) turned into a flag read at step boundaries.

      with common.Preemption() as preemption:
        while step < num_steps:
          ...one step...
          if preemption.stop_at(step):
            ...save a checkpoint; return normally (exit status 0)...

  The handler only records the signal; the loop decides when to stop, so a checkpoint is never
  cut in half and the next launch resumes exactly. The previous handlers are restored on exit.
  Handlers can only be installed from the main thread; elsewhere the notice is never seen.

  With several processes (`jax.distributed`), JAX's preemption service owns SIGTERM instead: it
  hears the notice on any process and `stop_at` returns True on every process at the same step,
  so the collective checkpoint is written by all of them. `requested` (the local flag, for work
  between steps such as the latent-cache build) then stays False.
  """

  def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)):
    self.signals = tuple(signals)
    self.received: int | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> "Preemption":
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for sig in self.signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    self.received = signum

  @property
  def requested(self) -> bool:
    """Whether this process has received the notice."""
    return self.received is not None

  def stop_at(self, step: int) -> bool:
    """Whether to checkpoint and stop after `step` (called at every step, on every process)."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def log_stop(self, what: str, step: int | None = None) -> None:
    at = f" at step {step}" if step is not None else ""
    name = signal.Signals(self.received).name if self.received else "preemption notice"
    logging.info("%s: stopped%s after %s; run the same command again to resume", what, at, name)


# --- What a model brings ------------------------------------------------------------------------

class Task:
  """One model's part of training (vdm's `Experiment`): a subclass supplies the network, the loss,
  the evaluation, the data and the export; the loop, the state and the steps are shared.

  Batches are dicts of per-process numpy arrays (rows of the global batch); `batch_shardings`
  says how each entry is laid out on the mesh.
  """
  name = "model"                         # in logs and the progress bar
  progress_metrics = {"loss": "train/loss"}   # progress-bar field -> train metric
  val_log_suffixes: tuple[str, ...] = ()      # val metrics logged to the console (all if empty)

  def __init__(self, cfg: ml_collections.ConfigDict):
    self.cfg = cfg

  def build_model(self, key: jax.Array) -> nnx.Module:
    raise NotImplementedError

  def loss_fn(self, model: nnx.Module, batch: dict, key: jax.Array, step: jax.Array
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(scalar loss, named terms logged as train/<name>), traced inside the train step."""
    raise NotImplementedError

  def batch_shardings(self, mesh: jax.sharding.Mesh) -> dict:
    raise NotImplementedError

  def eval_fn(self, model: nnx.Module, batch: dict, key: jax.Array) -> tuple[dict, Any]:
    """(named metrics of one validation batch, outputs handed to `write_examples`), jitted."""
    raise NotImplementedError

  def summarize(self, metrics: dict[str, float]) -> dict[str, float]:
    """The validation metrics averaged over the batches -> those logged; must hold `val_loss`
    (the best-checkpoint metric)."""
    return metrics

  def write_examples(self, writer: MetricWriter, step: int, batch: dict, outputs: Any) -> None:
    """Audio or images of the first validation batch (`batch` on the host, `outputs` global)."""

  def keys(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(init, step, eval) keys from `cfg.seed`."""
    return tuple(jax.random.split(jax.random.key(self.cfg.seed), 3))

  def prepare(self, workdir: pathlib.Path, preemption: Preemption) -> bool:
    """Work before training (e.g. a cache); False when a preemption notice stopped it."""
    del workdir, preemption
    return True

  def train_data(self, batch_size: int) -> Iterable[dict]:
    """The training batches (`batch_size` rows per process); its iterator is checkpointed."""
    raise NotImplementedError

  def val_batches(self, batch_size: int) -> list[dict]:
    raise NotImplementedError

  def init_state(self, s: Setup, key: jax.Array) -> dict:
    return create_state(self, s, key)

  def export(self, directory: pathlib.Path, s: Setup, state: dict, step: int) -> None:
    raise NotImplementedError


# --- State and steps ----------------------------------------------------------------------------

@dataclasses.dataclass
class Setup:
  """Everything static about a run: the module's graph, the optimizer and the shardings."""
  graphdef: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  state_sharding: Any
  abstract_state: Any  # {step, params, ema, opt} as ShapeDtypeStructs with their shardings
  mesh: jax.sharding.Mesh


def setup(task: Task, mesh: jax.sharding.Mesh) -> Setup:
  cfg = task.cfg
  tx, schedule = make_optimizer(cfg.optim, cfg.train.num_steps)
  # Shapes only: no initialiser runs. The networks hold parameters and nothing else (dropout
  # keys come with each call), so the parameters alone rebuild the module (`merge`).
  abstract_model = nnx.eval_shape(lambda: task.build_model(jax.random.key(0)))
  graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
  abstract_params = nnx.to_pure_dict(abstract_params)
  params_sharding = sharding.param_shardings(abstract_model, abstract_params, mesh, cfg.mesh.rules,
                                             cfg.mesh.min_shard_size)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  state_sharding = {
      "step": sharding.replicated(mesh), "params": params_sharding, "ema": params_sharding,
      "opt": sharding.optimizer_shardings(tx, abstract_opt, params_sharding, mesh)}
  abstract_state = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": abstract_params,
                    "ema": abstract_params, "opt": abstract_opt}
  abstract_state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                                abstract_state, state_sharding)
  return Setup(graphdef, tx, schedule, state_sharding, abstract_state, mesh)


def _fresh_state(s: Setup, params: Any) -> dict:
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "ema": jax.tree.map(jnp.copy, params), "opt": s.tx.init(params)}


def create_state(task: Task, s: Setup, key: jax.Array) -> dict:
  """Random parameters, EMA (= parameters) and optimizer, initialised under jit directly into
  their shardings."""
  init = lambda k: _fresh_state(s, nnx.to_pure_dict(nnx.state(task.build_model(k), nnx.Param)))
  return jax.jit(init, out_shardings=s.state_sharding)(key)


def state_from_params(s: Setup, params: Any) -> dict:
  """A fresh train state (step 0, EMA = parameters) from given parameters, already sharded."""
  return jax.jit(lambda p: _fresh_state(s, p), out_shardings=s.state_sharding)(params)


def merge(s: Setup, params: Any, train: bool = False) -> nnx.Module:
  model = nnx.merge(s.graphdef, params)
  model.train() if train else model.eval()
  return model


def make_train_step(task: Task, s: Setup):
  """The jitted `train_step(state, batch, key) -> (state, metrics)`, state donated."""

  def train_step(state, batch, key):
    key = jax.random.fold_in(key, state["step"])

    def loss_fn(params):
      return task.loss_fn(merge(s, params, train=True), batch, key, state["step"])

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt = s.tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = ema_update(state["ema"], params, task.cfg.optim.ema_decay, state["step"])
    metrics = {f"train/{k}": v for k, v in terms.items()}
    metrics.update({"train/loss": loss, "train/grad_norm": tree_norm(grads),
                    "train/param_norm": tree_norm(params), "train/lr": s.schedule(state["step"])})
    return {"step": state["step"] + 1, "params": params, "ema": ema, "opt": opt}, metrics

  return jax.jit(train_step,
                 in_shardings=(s.state_sharding, task.batch_shardings(s.mesh),
                               sharding.replicated(s.mesh)),
                 out_shardings=(s.state_sharding, sharding.replicated(s.mesh)),
                 donate_argnums=(0,))


def make_eval_step(task: Task, s: Setup):
  """The jitted `eval_step(params, batch, key) -> (metrics, outputs)` of the model in eval mode."""
  return jax.jit(lambda params, batch, key: task.eval_fn(merge(s, params), batch, key))


# --- The host loop ------------------------------------------------------------------------------

def train_and_evaluate(task: Task, workdir: str | pathlib.Path) -> dict:
  """Trains (resuming from `workdir` if it holds a checkpoint), then exports the EMA model to
  `workdir/export`. Returns the last validation metrics.

  On SIGTERM (a preemption notice) it stops at the next step boundary (or where `task.prepare`
  can), checkpoints, and returns without exporting; the same command then resumes from there.
  """
  with Preemption() as preemption:
    return _train(task, pathlib.Path(workdir), preemption)


def _train(task: Task, workdir: pathlib.Path, preemption: Preemption) -> dict:
  cfg = task.cfg
  write_config(cfg, workdir)
  mesh = sharding.mesh_from_config(cfg.mesh)
  logging.info("%s: %s", task.name, sharding.describe(mesh))
  if not task.prepare(workdir, preemption):
    return {}
  sharding.check_batch(cfg.train.batch_size, mesh)
  s = setup(task, mesh)
  init_key, step_key, eval_key = task.keys()
  batch_size = sharding.process_batch_size(cfg.train.batch_size)
  train_iter = iter(task.train_data(batch_size))
  manager = checkpointing.make_manager(workdir / "checkpoints", keep=cfg.train.keep_checkpoints)
  if manager.latest_step() is not None:
    state, _ = checkpointing.restore(manager, s.abstract_state, train_iter)
    logging.info("resumed from step %d", int(state["step"]))
  else:
    state = task.init_state(s, init_key)
  logging.info("%s: %s parameters", task.name, f"{layers.count_params(state['params']):,}")

  train_step = make_train_step(task, s)
  eval_step = make_eval_step(task, s)
  val: list[dict] = []   # read at the first evaluation
  writer = MetricWriter(workdir)
  step = int(state["step"])
  num_steps = cfg.train.num_steps
  progress = Progress(step, num_steps, task.name)
  t_start = time.time()
  last_log = (step, t_start)
  pending = None  # (step, metrics) of the previous step, fetched after the next one is dispatched
  val_metrics: dict[str, float] = {}
  preempted = False
  while step < num_steps:
    state, metrics = train_step(state, sharding.global_batch(next(train_iter), mesh), step_key)
    step += 1
    if pending is not None:
      last_log = _log_train(task, writer, progress, *pending, last_log)
    else:
      progress.update(1)
    pending = (step, metrics)
    preempted = preemption.stop_at(step)
    out_of_time = cfg.train.max_minutes > 0 and (time.time() - t_start) / 60 > cfg.train.max_minutes
    last = step == num_steps or out_of_time
    evaluated = (step % cfg.train.eval_every == 0 or last) and not preempted
    if evaluated:
      val = val or task.val_batches(batch_size)
      val_metrics = _evaluate(task, eval_step, state["ema"], val, eval_key, mesh, writer, step)
    if step % cfg.train.ckpt_every == 0 or last or preempted:
      checkpointing.save(manager, step, state, {"config": cfg.to_dict(), "step": step}, train_iter,
                         metrics={"val_loss": val_metrics["val_loss"]} if evaluated else None)
    if preempted:
      break
    if out_of_time:
      logging.info("stopping after %.1f minutes (train.max_minutes) at step %d",
                   cfg.train.max_minutes, step)
      break
  if pending is not None:
    check_finite({k: float(v) for k, v in jax.device_get(pending[1]).items()}, pending[0])
  progress.close()
  if preempted:
    preemption.log_stop(task.name, step)
  else:
    task.export(workdir / "export", s, state, step)
  writer.close()
  return val_metrics


def _log_train(task: Task, writer: MetricWriter, progress: Progress, step: int, metrics: dict,
               last_log: tuple[int, float]) -> tuple[int, float]:
  """Step `step`'s metrics (already computed): NaN check, TensorBoard every `log_every` steps."""
  m = {k: float(v) for k, v in jax.device_get(metrics).items()}
  check_finite(m, step)
  if step % task.cfg.train.log_every == 0:
    now = time.time()
    m["train/steps_per_sec"] = (step - last_log[0]) / max(now - last_log[1], 1e-9)
    last_log = (step, now)
    writer.scalars(step, m)
  progress.update(1, **{name: m[key] for name, key in task.progress_metrics.items()})
  return last_log


def _evaluate(task: Task, eval_step, params: Any, batches: list[dict], key: jax.Array,
              mesh: jax.sharding.Mesh, writer: MetricWriter, step: int) -> dict[str, float]:
  """The EMA model's metrics averaged over the validation batches, logged and written."""
  sums: dict[str, float] = {}
  first = None
  for b in batches:
    m, outputs = eval_step(params, sharding.global_batch(b, mesh), key)
    first = first or (b, outputs)
    for k, v in m.items():
      sums[k] = sums.get(k, 0.0) + float(v) / len(batches)
  sums = task.summarize(sums)
  writer.scalars(step, {f"val/{k}": v for k, v in sums.items()})
  task.write_examples(writer, step, *first)
  logging.info("step %d: val %s", step, {k: round(v, 4) for k, v in sums.items()
                                         if k.endswith(task.val_log_suffixes or ("",))})
  return sums
