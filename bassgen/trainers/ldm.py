"""Training loop of the conditional latent diffusion model (forked from the autoencoder's loop).

Reads cached latents (mix and bass, normalised) made once with the trained autoencoder named in
`cfg.autoencoder_checkpoint`; builds the cache under `workdir/latents/` if it is missing. The train
step is pure and jitted once with explicit shardings: `train_step(state, batch, key) -> (state,
metrics)`, state = {step, params, ema, opt} of pure-dict arrays, donated.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from bassgen import checkpointing, sharding
from bassgen.diffusion import edm
from bassgen.models import harmony
from bassgen.models.unet import UNet1D, count_params, harmony_enabled
from bassgen.trainers import common

# Validation noise levels. The first three are the ones the loss ratio target is stated at; the
# larger ones show whether the model uses the mix where the noisy bass alone says little.
VAL_SIGMAS = (0.2, 0.5, 1.0, 2.0, 5.0)
VAL_LOSS_SIGMAS = (0.2, 0.5, 1.0)  # val_loss (best-checkpoint metric) = mean cond loss over these


@dataclasses.dataclass
class Setup:
  graphdef: Any
  rest: Any            # non-parameter module state (dropout rng streams): constant, not trained
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  state_sharding: Any
  abstract_state: Any
  mesh: jax.sharding.Mesh


def build_model(cfg: ml_collections.ConfigDict, key: jax.Array) -> UNet1D:
  return UNet1D(cfg.model, rngs=nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1)))


def setup(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Setup:
  tx, schedule = common.make_optimizer(cfg.optim, cfg.train.num_steps)
  abstract_model = nnx.eval_shape(lambda: build_model(cfg, jax.random.key(0)))
  graphdef, abstract_params, _ = nnx.split(abstract_model, nnx.Param, ...)
  rest = nnx.split(build_model(cfg, jax.random.key(cfg.seed)), nnx.Param, ...)[2]
  abstract_params = nnx.to_pure_dict(abstract_params)
  params_sharding = sharding.param_shardings(abstract_model, abstract_params, mesh, cfg.mesh.rules,
                                             cfg.mesh.min_shard_size)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  state_sharding = {
      "step": sharding.replicated(mesh), "params": params_sharding, "ema": params_sharding,
      "opt": sharding.optimizer_shardings(tx, abstract_opt, params_sharding, mesh)}
  abstract_state = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": abstract_params,
                    "ema": abstract_params, "opt": abstract_opt}
  abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                abstract_state, state_sharding)
  return Setup(graphdef, rest, tx, schedule, state_sharding, abstract_state, mesh)


def create_state(cfg: ml_collections.ConfigDict, s: Setup, key: jax.Array) -> dict:

  def init(k):
    params = nnx.to_pure_dict(nnx.state(build_model(cfg, k), nnx.Param))
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "ema": jax.tree.map(jnp.copy, params), "opt": s.tx.init(params)}

  return jax.jit(init, out_shardings=s.state_sharding)(key)


def merge(s: Setup, params: Any, train: bool = False) -> UNet1D:
  model = nnx.merge(s.graphdef, params, s.rest)
  model.train() if train else model.eval()
  return model


def training_condition(cfg: ml_collections.ConfigDict, cond_BxTxC: jax.Array,
                       logits_BxTx12: jax.Array, key: jax.Array, step: jax.Array) -> jax.Array:
  """The condition the U-Net trains on. Its last 12 channels are the teacher's one-hot bass pitch
  class; with `model.harmony.predicted_path_prob` = p, each example instead gets, with probability
  p (ramped up from 0 over `predicted_path_warmup` steps), the head's own Viterbi path - what
  the sampler gives the U-Net. The teacher path changes at every new bass note, the sampler's at
  chord changes, so a U-Net that only ever saw the teacher learns to put its onsets where the
  one-hot changes and holds notes over a chord; with the sampler's path it must take the rhythm
  from the mix. The path is a constant of the loss (no gradient into the head)."""
  p = cfg.model.harmony.get("predicted_path_prob", 0.0)
  if not p:
    return cond_BxTxC
  warmup = cfg.model.harmony.get("predicted_path_warmup", 0)
  ramp = jnp.clip(step.astype(jnp.float32) / warmup, 0.0, 1.0) if warmup else 1.0
  path = harmony.decode_path(jax.lax.stop_gradient(logits_BxTx12),
                             cfg.sample.get("harmony_switch_penalty", 0.0))
  use_Bx1x1 = jax.random.bernoulli(key, p * ramp, (cond_BxTxC.shape[0], 1, 1))
  teacher = cond_BxTxC[..., -harmony.NUM_PC:]
  pcs = jnp.where(use_Bx1x1, harmony.one_hot_path(path, cond_BxTxC.dtype), teacher)
  return jnp.concatenate([cond_BxTxC[..., :-harmony.NUM_PC], pcs], axis=-1)


def make_train_step(cfg: ml_collections.ConfigDict, s: Setup) -> Callable:

  def train_step(state, batch, key):
    key = jax.random.fold_in(key, state["step"])

    def loss_fn(params):
      model = merge(s, params, train=True)
      cond, aux = batch["mix"], {}
      if model.harmony is not None:
        logits = model.harmony_logits(cond)
        ce, acc = harmony.aux_loss(logits, batch["labels"])
        aux = dict(harmony_ce=ce, harmony_acc=acc)
        cond = training_condition(cfg, cond, logits, jax.random.fold_in(key, 7), state["step"])
      loss, edm_aux = edm.denoising_loss(model, batch["target"], cond, key, cfg.diffusion)
      aux = dict(edm_aux, **aux)
      if model.harmony is not None:
        loss = loss + cfg.model.harmony.aux_weight * ce
      return loss, aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt = s.tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = common.ema_update(state["ema"], params, cfg.optim.ema_decay, state["step"])
    metrics = {f"train/{k}": v for k, v in aux.items()}
    metrics.update({"train/loss": loss, "train/grad_norm": common.tree_norm(grads),
                    "train/param_norm": common.tree_norm(params),
                    "train/lr": s.schedule(state["step"])})
    return {"step": state["step"] + 1, "params": params, "ema": ema, "opt": opt}, metrics

  return jax.jit(train_step,
                 in_shardings=(s.state_sharding, batch_shardings(cfg, s.mesh),
                               sharding.replicated(s.mesh)),
                 out_shardings=(s.state_sharding, sharding.replicated(s.mesh)),
                 donate_argnums=(0,))


def batch_shardings(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> dict:
  out = {"mix": sharding.batch_sharding(mesh, 3), "target": sharding.batch_sharding(mesh, 3)}
  if harmony_enabled(cfg.model):
    out["labels"] = sharding.batch_sharding(mesh, 2)
  return out


def make_eval_step(cfg: ml_collections.ConfigDict, s: Setup) -> Callable:
  """Weighted denoising loss at fixed σ, with the mix and with the null condition."""

  def eval_step(params, batch, key):
    model = merge(s, params)
    out = {}
    for i, sigma in enumerate(VAL_SIGMAS):
      k = jax.random.fold_in(key, i)  # the same noise for both conditions
      for use_cond, name in ((True, "cond"), (False, "uncond")):
        out[f"sigma{sigma:g}_{name}"] = edm.val_loss_at_sigma(
            model, batch["target"], batch["mix"], sigma, k, use_cond,
            sigma_data=cfg.diffusion.sigma_data)
    if model.harmony is not None:
      logits = model.harmony_logits(batch["mix"])
      out["harmony_ce"], out["harmony_acc"] = harmony.aux_loss(logits, batch["labels"])
      # The pitch-class path the sampler would condition on, scored against the labels.
      path = harmony.decode_path(logits, cfg.sample.get("harmony_switch_penalty", 0.0))
      out["harmony_path_acc"] = harmony.path_accuracy(path, batch["labels"])
    return out

  return jax.jit(eval_step)


def ensure_latent_cache(cfg: ml_collections.ConfigDict, workdir: pathlib.Path,
                        should_stop: Callable[[], bool] | None = None
                        ) -> tuple[pathlib.Path, pathlib.Path] | None:
  """Encodes data.train_dir / data.val_dir with the autoencoder once (process 0), then reuses it.

  Returns None when `should_stop()` became true during the build: the tracks cached so far are
  kept and the next call continues from there.
  """
  from bassgen.codec import Codec  # pylint: disable=g-import-not-at-top
  from bassgen.data import latents  # pylint: disable=g-import-not-at-top

  out = {"train": workdir / "latents" / "train", "val": workdir / "latents" / "val"}
  sources = {"train": cfg.data.train_dir, "val": cfg.data.val_dir or cfg.data.train_dir}
  if all((d / latents.INDEX_NAME).is_file() for d in out.values()):
    return out["train"], out["val"]
  codec = Codec.load(cfg.autoencoder_checkpoint)
  if codec.latent_channels != cfg.model.latent_channels:
    from bassgen.errors import BassgenError  # pylint: disable=g-import-not-at-top
    raise BassgenError(f"{cfg.autoencoder_checkpoint}: the autoencoder makes "
                       f"{codec.latent_channels}-channel latents but model.latent_channels is "
                       f"{cfg.model.latent_channels}. Fix configs/ldm.py.")
  # Every process encodes its share of the tracks (track i goes to process i % count); once all
  # have, process 0 writes the index. Stopped (preemption), the next launch builds the rest.
  pid, count = jax.process_index(), jax.process_count()
  for split, d in out.items():
    if (d / latents.INDEX_NAME).is_file():
      continue
    logging.info("caching %s latents of %s in %s", split, sources[split], d)
    latents.cache_latents(
        codec, sources[split], d, mixes_per_track=cfg.data.mixes_per_track,
        seed=cfg.seed + (split == "val"), gain_db_range=tuple(cfg.data.gain_db_range),
        log=lambda m: logging.info("%s", m), should_stop=should_stop, shard=(pid, count))
    if count > 1:
      multihost_utils.sync_global_devices(f"latent cache {split}: tracks")
      if pid == 0:
        latents.finish_cache(codec, sources[split], d, cfg.data.mixes_per_track)
      multihost_utils.sync_global_devices(f"latent cache {split}: index")
    if not (d / latents.INDEX_NAME).is_file():
      return None
  return out["train"], out["val"]


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains (resuming if `workdir` holds a checkpoint) and exports the EMA model.

  On SIGTERM (a preemption notice) it stops at the next track of the latent-cache build or the
  next step boundary of training (saving a checkpoint) and returns without exporting; the same
  command then resumes the build or the training from there.
  """
  with common.Preemption() as preemption:
    return _train(cfg, pathlib.Path(workdir), preemption)


def _train(cfg: ml_collections.ConfigDict, workdir: pathlib.Path,
           preemption: common.Preemption) -> dict:
  from bassgen.data import latents  # pylint: disable=g-import-not-at-top

  common.write_config(cfg, workdir)
  mesh = sharding.mesh_from_config(cfg.mesh)
  logging.info("latent diffusion: %s", sharding.describe(mesh))
  cache = ensure_latent_cache(cfg, workdir, should_stop=lambda: preemption.requested)
  if cache is None:
    preemption.log_stop("latent cache")
    return {}
  train_dir, val_dir = cache
  sharding.check_batch(cfg.train.batch_size, mesh)
  s = setup(cfg, mesh)
  key = jax.random.key(cfg.seed)
  init_key, step_key, eval_key = jax.random.split(key, 3)
  per_process = sharding.process_batch_size(cfg.train.batch_size)
  train_iter = iter(latents.make_latent_train_dataset(
      train_dir, crop_frames=cfg.train.crop_frames, batch_size=per_process, seed=cfg.seed,
      silence_threshold_db=cfg.data.silence_threshold_db,
      with_chroma=cfg.model.get("mix_chroma", False), with_harmony=harmony_enabled(cfg.model)))
  manager = checkpointing.make_manager(workdir / "checkpoints", keep=cfg.train.keep_checkpoints)
  if manager.latest_step() is not None:
    state, _ = checkpointing.restore(manager, s.abstract_state, train_iter)
    logging.info("resumed from step %d", int(state["step"]))
  else:
    state = create_state(cfg, s, init_key)
  logging.info("U-Net: %s parameters", f"{count_params(merge(s, state['params'])):,}")

  train_step = make_train_step(cfg, s)
  eval_step = make_eval_step(cfg, s)
  val = latents.make_latent_eval_batches(val_dir, crop_frames=cfg.train.crop_frames,
                                         batch_size=per_process,
                                         num_examples=cfg.data.num_val_examples, seed=cfg.seed,
                                         silence_threshold_db=cfg.data.silence_threshold_db,
                                         with_chroma=cfg.model.get("mix_chroma", False),
                                         with_harmony=harmony_enabled(cfg.model))
  writer = common.MetricWriter(workdir)
  step = int(state["step"])
  num_steps = cfg.train.num_steps
  progress = common.Progress(step, num_steps, "latent diffusion")
  t_start = time.time()
  last_log = [step, t_start]
  pending = None
  val_metrics: dict[str, float] = {}

  def evaluate(st, at_step):
    sums: dict[str, float] = {}
    for b in val:
      for k, v in eval_step(st["ema"], sharding.global_batch(b, mesh), eval_key).items():
        sums[k] = sums.get(k, 0.0) + float(v) / len(val)
    for sigma in VAL_SIGMAS:
      sums[f"sigma{sigma:g}_ratio"] = sums[f"sigma{sigma:g}_cond"] / sums[f"sigma{sigma:g}_uncond"]
    sums["val_loss"] = float(np.mean([sums[f"sigma{x:g}_cond"] for x in VAL_LOSS_SIGMAS]))
    writer.scalars(at_step, {f"val/{k}": v for k, v in sums.items()})
    return sums

  def checkpoint(st, at_step, metrics=None):
    checkpointing.save(manager, at_step, st, {"config": cfg.to_dict(), "step": at_step},
                       train_iter, metrics={"val_loss": metrics["val_loss"]} if metrics else None)

  preempted = False
  while step < num_steps:
    batch = sharding.global_batch(next(train_iter), mesh)
    state, metrics = train_step(state, batch, step_key)
    step += 1
    if pending is not None:
      done_step, m = pending
      m = {k: float(v) for k, v in jax.device_get(m).items()}
      common.check_finite(m, done_step)
      if done_step % cfg.train.log_every == 0:
        now = time.time()
        m["train/steps_per_sec"] = (done_step - last_log[0]) / max(now - last_log[1], 1e-9)
        last_log[:] = [done_step, now]
        writer.scalars(done_step, m)
      progress.update(1, loss=m["train/loss"])
    else:
      progress.update(1)
    pending = (step, metrics)
    preempted = preemption.stop_at(step)
    out_of_time = cfg.train.max_minutes > 0 and (time.time() - t_start) / 60 > cfg.train.max_minutes
    last = step == num_steps or out_of_time
    evaluated = (step % cfg.train.eval_every == 0 or last) and not preempted
    if evaluated:
      val_metrics = evaluate(state, step)
      logging.info("step %d: val %s", step, {k: round(v, 4) for k, v in val_metrics.items()})
    if step % cfg.train.ckpt_every == 0 or last or preempted:
      checkpoint(state, step, val_metrics if evaluated else None)
    if preempted:
      break
    if out_of_time:
      logging.info("stopping after %.1f minutes (train.max_minutes) at step %d",
                   cfg.train.max_minutes, step)
      break
  if pending is not None:
    common.check_finite({k: float(v) for k, v in jax.device_get(pending[1]).items()}, pending[0])
  progress.close()
  if preempted:
    preemption.log_stop("latent diffusion", step)
    writer.close()
    return val_metrics
  export_model(workdir / "export", cfg, state["ema"], step)
  writer.close()
  return val_metrics


def export_model(directory: pathlib.Path, cfg: ml_collections.ConfigDict, params: Any,
                 step: int) -> None:
  meta = {"kind": "ldm", "config": cfg.to_dict(), "step": int(step),
          "autoencoder_checkpoint": str(cfg.autoencoder_checkpoint)}
  checkpointing.save_params(directory, sharding.to_host(params), meta)
  logging.info("exported the EMA diffusion model to %s", directory)
