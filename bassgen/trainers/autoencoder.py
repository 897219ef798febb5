"""Training loop of the audio autoencoder: one pure, jitted, sharded train step.

    state = create_state(cfg, mesh, key)                  # initialised already sharded
    step_fn = make_train_step(cfg, graphdef, tx, ...)     # jitted once, state donated
    state, metrics = step_fn(state, batch, key)

The state is a dict {step, params, ema, opt} of (pure-dict) arrays; `nnx.merge` rebuilds the module
inside the step. Examples are mixes and bass stems from the paired-data pipeline (both are audio
the autoencoder must code).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from bassgen import checkpointing, sharding
from bassgen import codec as codec_lib
from bassgen.errors import BassgenError
from bassgen.models import autoencoder_losses
from bassgen.models.autoencoder import Autoencoder
from bassgen.trainers import common



@dataclasses.dataclass
class Setup:
  """Everything static about a run: the module's graph, the optimizer and the shardings."""
  graphdef: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  state_sharding: Any
  abstract_state: Any
  mesh: jax.sharding.Mesh


def build_model(cfg: ml_collections.ConfigDict, key: jax.Array) -> Autoencoder:
  return Autoencoder(cfg.model, rngs=nnx.Rngs(params=key))


def setup(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Setup:
  tx, schedule = common.make_optimizer(cfg.optim, cfg.train.num_steps)
  abstract_model = nnx.eval_shape(lambda: build_model(cfg, jax.random.key(0)))
  graphdef, abstract_params = nnx.split(abstract_model)
  abstract_params = nnx.to_pure_dict(abstract_params)
  params_sharding = sharding.param_shardings(abstract_model, abstract_params, mesh, cfg.mesh.rules,
                                             cfg.mesh.min_shard_size)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  state_sharding = {
      "step": sharding.replicated(mesh),
      "params": params_sharding,
      "ema": params_sharding,
      "opt": sharding.optimizer_shardings(tx, abstract_opt, params_sharding, mesh),
  }
  abstract_state = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": abstract_params,
                    "ema": abstract_params, "opt": abstract_opt}
  abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
      state_sharding)
  return Setup(graphdef, tx, schedule, state_sharding, abstract_state, mesh)


def create_state(cfg: ml_collections.ConfigDict, s: Setup, key: jax.Array) -> dict:
  """Initialises parameters, EMA (= parameters) and optimizer directly into their shardings.

  With `train.init_from` (an autoencoder export, workdir or bundle of the same architecture), the
  parameters start from that model's weights instead of random ones (fine-tuning with new losses).
  """
  init_from = cfg.train.get("init_from", "")
  if init_from:
    return _state_from_export(cfg, s, init_from)

  def init(k):
    params = nnx.to_pure_dict(nnx.state(build_model(cfg, k)))
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "ema": jax.tree.map(jnp.copy, params), "opt": s.tx.init(params)}

  return jax.jit(init, out_shardings=s.state_sharding)(key)


def _state_from_export(cfg: ml_collections.ConfigDict, s: Setup, path: str) -> dict:
  directory = codec_lib.find_export(path, "autoencoder")
  meta = checkpointing.load_meta(directory)
  theirs = meta.get("config", {}).get("model")
  if meta.get("kind") != "autoencoder" or theirs is None or theirs != json.loads(
      json.dumps(cfg.model.to_dict())):
    raise BassgenError(f"{directory}: train.init_from must be an autoencoder export with the same "
                       "model section as this config (configs/autoencoder.py); its architecture "
                       "differs. Train from scratch with --config.train.init_from=''.")
  params = checkpointing.load_params(directory, s.abstract_state["params"])
  logging.info("initialised the parameters from %s (step %s)", directory, meta.get("step"))

  def init(p):
    p = jax.tree.map(lambda x: x.astype(jnp.float32), p)
    return {"step": jnp.zeros((), jnp.int32), "params": p,
            "ema": jax.tree.map(jnp.copy, p), "opt": s.tx.init(p)}

  return jax.jit(init, out_shardings=s.state_sharding)(params)


def _forward(graphdef, params, wav_BxS, noise_key, cfg):
  model = nnx.merge(graphdef, params)
  _, feat_true = model.analysis(wav_BxS)
  z = model.encoder(feat_true)
  if cfg.loss.latent_noise_std > 0:
    z = z + cfg.loss.latent_noise_std * jax.random.normal(noise_key, z.shape, z.dtype)
  feat_pred = model.decoder(z)
  wav_pred = model.synthesis(feat_pred)
  terms = autoencoder_losses.reconstruction_losses(
      feat_pred, feat_true, wav_pred, wav_BxS, z, cfg.loss, cfg.sample_rate)
  return terms, wav_pred


def make_train_step(cfg: ml_collections.ConfigDict, s: Setup) -> Callable:
  """The jitted `train_step(state, batch, key) -> (state, metrics)`, state donated."""

  def train_step(state, batch, key):
    key = jax.random.fold_in(key, state["step"])
    wav = jnp.concatenate([batch["mix"], batch["target"]], axis=0)

    def loss_fn(params):
      terms, _ = _forward(s.graphdef, params, wav, key, cfg)
      return autoencoder_losses.total_loss(terms, cfg.loss), terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt = s.tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = common.ema_update(state["ema"], params, cfg.optim.ema_decay, state["step"])
    metrics = {f"train/{k}": v for k, v in terms.items()}
    metrics.update({"train/loss": loss, "train/grad_norm": common.tree_norm(grads),
                    "train/param_norm": common.tree_norm(params),
                    "train/lr": s.schedule(state["step"])})
    return {"step": state["step"] + 1, "params": params, "ema": ema, "opt": opt}, metrics

  batch_sh = sharding.batch_sharding(s.mesh)
  return jax.jit(train_step,
                 in_shardings=(s.state_sharding, {"mix": batch_sh, "target": batch_sh},
                               sharding.replicated(s.mesh)),
                 out_shardings=(s.state_sharding, sharding.replicated(s.mesh)),
                 donate_argnums=(0,))


def make_eval_step(cfg: ml_collections.ConfigDict, s: Setup) -> Callable:
  """Loss terms of the EMA model on a batch, for mixes and bass separately, plus reconstructions."""

  def eval_step(params, batch):
    out = {}
    recon = {}
    for name in ("mix", "target"):
      terms, wav_pred = _forward(s.graphdef, params, batch[name], jax.random.key(0), cfg)
      terms["loss"] = autoencoder_losses.total_loss(terms, cfg.loss)
      out.update({f"{name}/{k}": v for k, v in terms.items()})
      recon[name] = wav_pred
    return out, recon

  return jax.jit(eval_step)


def latent_statistics(cfg: ml_collections.ConfigDict, s: Setup, params: Any,
                      batches: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of the latents of mixes and bass stems (what the LDM normalises by)."""

  @jax.jit
  def moments(p, wav):
    z = nnx.merge(s.graphdef, p).encode(wav)
    return jnp.mean(z, axis=(0, 1)), jnp.mean(z**2, axis=(0, 1))

  m1, m2 = [], []
  for b in batches:
    g = sharding.global_batch(b, s.mesh)
    for name in ("mix", "target"):
      a, b2 = moments(params, g[name])
      m1.append(sharding.to_host(a))
      m2.append(sharding.to_host(b2))
  mean = np.mean(m1, axis=0)
  std = np.sqrt(np.maximum(np.mean(m2, axis=0) - mean**2, 1e-12))
  return mean.astype(np.float32), std.astype(np.float32)


def _data(cfg: ml_collections.ConfigDict, seed: int):
  from bassgen.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_train_dataset(
      cfg.data.train_dir, crop_samples=cfg.data.crop_samples,
      batch_size=sharding.process_batch_size(cfg.train.batch_size), seed=seed,
      silence_threshold_db=cfg.data.silence_threshold_db,
      gain_db_range=tuple(cfg.data.gain_db_range), worker_count=cfg.data.worker_count)


def _val_batches(cfg: ml_collections.ConfigDict) -> list[dict[str, np.ndarray]]:
  from bassgen.data import pipeline  # pylint: disable=g-import-not-at-top
  val_dir = cfg.data.val_dir or cfg.data.train_dir
  ds = pipeline.make_eval_dataset(val_dir, crop_samples=cfg.data.crop_samples,
                                  batch_size=sharding.process_batch_size(cfg.train.batch_size),
                                  num_examples=cfg.data.num_val_examples,
                                  seed=cfg.seed)
  return list(ds)


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains (resuming from `workdir` if it holds a checkpoint), then exports the EMA model with
  its latent statistics to `workdir/export`. Returns the last validation metrics.

  On SIGTERM (a preemption notice) it checkpoints at the next step boundary and returns without
  exporting; the same command then resumes from that checkpoint.
  """
  with common.Preemption() as preemption:
    return _train(cfg, pathlib.Path(workdir), preemption)


def _train(cfg: ml_collections.ConfigDict, workdir: pathlib.Path,
           preemption: common.Preemption) -> dict:
  common.write_config(cfg, workdir)
  mesh = sharding.mesh_from_config(cfg.mesh)
  logging.info("autoencoder: %s", sharding.describe(mesh))
  sharding.check_batch(cfg.train.batch_size, mesh)
  s = setup(cfg, mesh)
  key = jax.random.key(cfg.seed)
  init_key, step_key = jax.random.split(key)

  train_ds = _data(cfg, cfg.seed)
  train_iter = iter(train_ds)
  manager = checkpointing.make_manager(workdir / "checkpoints", keep=cfg.train.keep_checkpoints)
  if manager.latest_step() is not None:
    state, _ = checkpointing.restore(manager, s.abstract_state, train_iter)
    logging.info("resumed from step %d", int(state["step"]))
  else:
    state = create_state(cfg, s, init_key)

  train_step = make_train_step(cfg, s)
  eval_step = make_eval_step(cfg, s)
  val: list[dict[str, np.ndarray]] = []  # read at the first evaluation
  writer = common.MetricWriter(workdir)
  step = int(state["step"])
  num_steps = cfg.train.num_steps
  progress = common.Progress(step, num_steps, "autoencoder")
  t_start = time.time()
  pending = None  # metrics of the previous step, fetched after the next one is dispatched
  val_metrics: dict[str, float] = {}
  last_log = [step, t_start]

  def evaluate(st, at_step):
    if not val:
      val.extend(_val_batches(cfg))
    sums: dict[str, float] = {}
    recon = None
    for b in val:
      m, r = eval_step(st["ema"], sharding.global_batch(b, mesh))
      recon = recon or (b, r)
      for k, v in m.items():
        sums[k] = sums.get(k, 0.0) + float(v) / len(val)
    sums["val_loss"] = 0.5 * (sums["mix/loss"] + sums["target/loss"])
    writer.scalars(at_step, {f"val/{k}": v for k, v in sums.items()})
    if cfg.train.audio_every and (at_step % cfg.train.audio_every == 0 or at_step == num_steps):
      b, r = recon
      for name in ("mix", "target"):
        orig = np.asarray(b[name][0])
        rec = sharding.local_rows(r[name])[0]   # row 0 of process 0 is its b[name][0]
        writer.audio(at_step, f"audio/{name}_original", orig, cfg.sample_rate)
        writer.audio(at_step, f"audio/{name}_reconstruction", rec, cfg.sample_rate)
        writer.spectrogram(at_step, f"spectrogram/{name}",
                           {"original": orig, "reconstruction": rec}, cfg.sample_rate)
    return sums

  def checkpoint(st, at_step, metrics=None):
    meta = {"config": cfg.to_dict(), "step": at_step}
    checkpointing.save(manager, at_step, st, meta, train_iter,
                       metrics={"val_loss": metrics["val_loss"]} if metrics else None)

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
      progress.update(1, loss=m["train/loss"], mel_db=m["train/log_mel_db"])
    else:
      progress.update(1)
    pending = (step, metrics)
    preempted = preemption.stop_at(step)
    out_of_time = cfg.train.max_minutes > 0 and (time.time() - t_start) / 60 > cfg.train.max_minutes
    last = step == num_steps or out_of_time
    evaluated = (step % cfg.train.eval_every == 0 or last) and not preempted
    if evaluated:
      val_metrics = evaluate(state, step)
      logging.info("step %d: val %s", step, {k: round(v, 4) for k, v in val_metrics.items()
                                             if k.endswith(("loss", "log_mel_db"))})
    if step % cfg.train.ckpt_every == 0 or last or preempted:
      checkpoint(state, step, val_metrics if evaluated else None)
    if preempted:
      break
    if out_of_time:
      logging.info("stopping after %.1f minutes (train.max_minutes) at step %d", cfg.train.max_minutes, step)
      break
  if pending is not None:
    common.check_finite({k: float(v) for k, v in jax.device_get(pending[1]).items()}, pending[0])
  progress.close()
  if preempted:
    preemption.log_stop("autoencoder", step)
    writer.close()
    return val_metrics

  stats_iter = iter(_data(cfg, cfg.seed + 1))
  batches = [next(stats_iter) for _ in range(cfg.train.stats_batches)]
  mean, std = latent_statistics(cfg, s, state["ema"], batches)
  export_model(workdir / "export", cfg, state["ema"], mean, std, step)
  writer.close()
  return val_metrics


def export_model(directory: pathlib.Path, cfg: ml_collections.ConfigDict, params: Any,
                 latent_mean: np.ndarray, latent_std: np.ndarray, step: int) -> None:
  """The inference bundle: EMA parameters, config and latent statistics."""
  meta = {"kind": "autoencoder", "config": cfg.to_dict(), "step": int(step),
          "latent_mean": [float(x) for x in latent_mean],
          "latent_std": [float(x) for x in latent_std]}
  checkpointing.save_params(directory, sharding.to_host(params), meta)
  logging.info("exported the EMA autoencoder to %s", directory)
