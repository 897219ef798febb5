"""The conditional latent diffusion model's part of training (the loop is `trainers/common.py`):
the EDM denoising loss (plus the harmony head's cross-entropy), validation losses at fixed noise
levels with and without the mix, the latent cache, and the export.

Reads cached latents (mix and bass, normalised) made once with the trained autoencoder named in
`cfg.autoencoder_checkpoint`; builds the cache under `workdir/latents/` if it is missing.

    python -m bassgen.main --config=configs/ldm.py:runlocal --workdir=runs/ldm
"""
from __future__ import annotations

import logging
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from bassgen import checkpointing, sharding
from bassgen.codec import Codec
from bassgen.data import latents
from bassgen.diffusion import edm
from bassgen.errors import BassgenError
from bassgen.models import harmony
from bassgen.models.unet import UNet1D, UNetConfig
from bassgen.trainers import common

# Validation noise levels. The first three are the ones the loss ratio target is stated at; the
# larger ones show whether the model uses the mix where the noisy bass alone says little.
VAL_SIGMAS = (0.2, 0.5, 1.0, 2.0, 5.0)
VAL_LOSS_SIGMAS = (0.2, 0.5, 1.0)  # val_loss (best-checkpoint metric) = mean cond loss over these

Setup = common.Setup
merge = common.merge


class LDMTask(common.Task):
  name = "latent diffusion"

  def __init__(self, cfg: ml_collections.ConfigDict):
    super().__init__(cfg)
    self.model_cfg = UNetConfig.from_config(cfg.model)
    self.cache: tuple[pathlib.Path, pathlib.Path] | None = None   # (train, val) latent dirs

  def build_model(self, key: jax.Array) -> UNet1D:
    return UNet1D(self.model_cfg, rngs=nnx.Rngs(params=key))

  def loss_fn(self, model, batch, key, step):
    cfg = self.cfg
    cond, aux = batch["mix"], {}
    if model.harmony is not None:
      logits = model.harmony_logits(cond)
      ce, acc = harmony.aux_loss(logits, batch["labels"])
      aux = dict(harmony_ce=ce, harmony_acc=acc)
      cond = training_condition(cfg, cond, logits, jax.random.fold_in(key, 7), step)
    if model.onsets is not None:
      aux["onset_bce"] = harmony.onset_loss(model.onset_logits(cond), batch["onsets"])
    loss, edm_aux = edm.denoising_loss(model, batch["target"], cond, key, cfg.diffusion)
    aux = dict(edm_aux, **aux)
    if model.harmony is not None:
      loss = loss + cfg.model.harmony.aux_weight * ce
    if model.onsets is not None:
      loss = loss + cfg.model.harmony.get("onset_aux_weight", 1.0) * aux["onset_bce"]
    return loss, aux

  def batch_shardings(self, mesh):
    return batch_shardings(self.cfg, mesh)

  def eval_fn(self, model, batch, key):
    """Weighted denoising loss at fixed sigma, with the mix and with the null condition."""
    cfg = self.cfg
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
    if model.onsets is not None:
      logits = model.onset_logits(batch["mix"])
      out["onset_bce"] = harmony.onset_loss(logits, batch["onsets"])
      # The onsets the sampler would give (picked peaks, ±1 frame), scored against the score's.
      picked = harmony.pick_onsets(logits, cfg.sample.get("onset_threshold", 0.5))
      out["onset_f"] = harmony.onset_f1(picked, batch["onsets"])
    return out, None

  def summarize(self, metrics):
    for sigma in VAL_SIGMAS:
      metrics[f"sigma{sigma:g}_ratio"] = (metrics[f"sigma{sigma:g}_cond"]
                                          / metrics[f"sigma{sigma:g}_uncond"])
    metrics["val_loss"] = float(np.mean([metrics[f"sigma{x:g}_cond"] for x in VAL_LOSS_SIGMAS]))
    return metrics

  def prepare(self, workdir, preemption):
    self.cache = ensure_latent_cache(self.cfg, workdir, should_stop=lambda: preemption.requested)
    if self.cache is None:
      preemption.log_stop("latent cache")
      return False
    return True

  def _latent_options(self) -> dict:
    cfg = self.cfg
    return dict(crop_frames=cfg.train.crop_frames, seed=cfg.seed,
                silence_threshold_db=cfg.data.silence_threshold_db,
                with_chroma=self.model_cfg.mix_chroma,
                with_harmony=self.model_cfg.harmony.enabled,
                with_onsets=self.model_cfg.harmony.onsets)

  def train_data(self, batch_size):
    return latents.make_latent_train_dataset(self.cache[0], batch_size=batch_size,
                                             **self._latent_options())

  def val_batches(self, batch_size):
    return latents.make_latent_eval_batches(self.cache[1], batch_size=batch_size,
                                            num_examples=self.cfg.data.num_val_examples,
                                            **self._latent_options())

  def export(self, directory, s, state, step):
    del s
    export_model(directory, self.cfg, state["ema"], step)


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
  # The pitch-class channels follow the mix's (and precede the onset channel, if any).
  start = cond_BxTxC.shape[-1] - harmony.NUM_PC - (1 if cfg.model.harmony.get("onsets") else 0)
  teacher = cond_BxTxC[..., start: start + harmony.NUM_PC]
  pcs = jnp.where(use_Bx1x1, harmony.one_hot_path(path, cond_BxTxC.dtype), teacher)
  return jnp.concatenate([cond_BxTxC[..., :start], pcs, cond_BxTxC[..., start + harmony.NUM_PC:]],
                         axis=-1)


# The task's pieces by name, as tests, benchmarks and notebooks use them.

def build_model(cfg: ml_collections.ConfigDict, key: jax.Array) -> UNet1D:
  return LDMTask(cfg).build_model(key)


def setup(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Setup:
  return common.setup(LDMTask(cfg), mesh)


def create_state(cfg: ml_collections.ConfigDict, s: Setup, key: jax.Array) -> dict:
  return common.create_state(LDMTask(cfg), s, key)


def make_train_step(cfg: ml_collections.ConfigDict, s: Setup) -> Callable:
  return common.make_train_step(LDMTask(cfg), s)


def make_eval_step(cfg: ml_collections.ConfigDict, s: Setup) -> Callable:
  return common.make_eval_step(LDMTask(cfg), s)


def batch_shardings(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> dict:
  out = {"mix": sharding.batch_sharding(mesh, 3), "target": sharding.batch_sharding(mesh, 3)}
  model_cfg = UNetConfig.from_config(cfg.model)
  if model_cfg.harmony.enabled:
    out["labels"] = sharding.batch_sharding(mesh, 2)
  if model_cfg.harmony.onsets:
    out["onsets"] = sharding.batch_sharding(mesh, 2)
  return out


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Builds the latent cache if needed, trains (resuming if `workdir` holds a checkpoint) and
  exports the EMA model; see `common.train_and_evaluate`. On SIGTERM during the cache build it
  stops at the next track; the same command continues the build from there."""
  return common.train_and_evaluate(LDMTask(cfg), workdir)


def ensure_latent_cache(cfg: ml_collections.ConfigDict, workdir: pathlib.Path,
                        should_stop: Callable[[], bool] | None = None
                        ) -> tuple[pathlib.Path, pathlib.Path] | None:
  """Encodes data.train_dir / data.val_dir with the autoencoder once (process 0), then reuses it.

  Returns None when `should_stop()` became true during the build: the tracks cached so far are
  kept and the next call continues from there.
  """
  out = {"train": workdir / "latents" / "train", "val": workdir / "latents" / "val"}
  sources = {"train": cfg.data.train_dir, "val": cfg.data.val_dir or cfg.data.train_dir}
  if all((d / latents.INDEX_NAME).is_file() for d in out.values()):
    if UNetConfig.from_config(cfg.model).harmony.onsets:
      _add_onsets(sources, out)
    return out["train"], out["val"]
  codec = Codec.load(cfg.autoencoder_checkpoint)
  if codec.latent_channels != cfg.model.latent_channels:
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


def _add_onsets(sources: dict, out: dict) -> None:
  """A cache written before the onset channel gets it (process 0 rewrites, the others wait)."""
  missing = [s for s, d in out.items() if not latents.read_latent_index(d).get("onsets")]
  if not missing:
    return
  if jax.process_index() == 0:
    for split in missing:
      logging.info("adding bass onsets to the %s latent cache %s", split, out[split])
      latents.add_onsets(sources[split], out[split], log=lambda m: logging.info("%s", m))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("latent cache: onsets")


def export_model(directory: pathlib.Path, cfg: ml_collections.ConfigDict, params: Any,
                 step: int) -> None:
  meta = {"kind": "ldm", "config": checkpointing.model_config(cfg.to_dict()), "step": int(step),
          "autoencoder_checkpoint": str(cfg.autoencoder_checkpoint)}
  checkpointing.save_params(directory, sharding.to_host(params), meta)
  logging.info("exported the EMA diffusion model to %s", directory)
