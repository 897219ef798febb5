"""The audio autoencoder's part of training (the loop is `trainers/common.py`): its reconstruction
loss on mixes and bass stems together, its validation metrics and audio, optional
initialisation from an earlier export, and an export with the latents' per-channel statistics.

    python -m bassgen.main --config=configs/autoencoder.py:runlocal --workdir=runs/ae
"""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bassgen import checkpointing, sharding
from bassgen import codec as codec_lib
from bassgen.data import pipeline
from bassgen.errors import BassgenError
from bassgen.models import autoencoder_losses
from bassgen.models.autoencoder import Autoencoder, AutoencoderConfig
from bassgen.trainers import common

Setup = common.Setup


class AutoencoderTask(common.Task):
  name = "autoencoder"
  progress_metrics = {"loss": "train/loss", "mel_db": "train/log_mel_db"}
  val_log_suffixes = ("loss", "log_mel_db")

  def build_model(self, key: jax.Array) -> Autoencoder:
    return Autoencoder(AutoencoderConfig.from_config(self.cfg.model), rngs=nnx.Rngs(params=key))

  def loss_fn(self, model, batch, key, step):
    del step
    wav = jnp.concatenate([batch["mix"], batch["target"]], axis=0)
    terms, _ = _forward(model, wav, key, self.cfg)
    return autoencoder_losses.total_loss(terms, self.cfg.loss), terms

  def batch_shardings(self, mesh):
    batch_sh = sharding.batch_sharding(mesh)
    return {"mix": batch_sh, "target": batch_sh}

  def eval_fn(self, model, batch, key):
    """Loss terms for mixes and bass separately, plus the reconstructions."""
    out, recon = {}, {}
    for name in ("mix", "target"):
      terms, recon[name] = _forward(model, batch[name], key, self.cfg)
      terms["loss"] = autoencoder_losses.total_loss(terms, self.cfg.loss)
      out.update({f"{name}/{k}": v for k, v in terms.items()})
    return out, recon

  def summarize(self, metrics):
    metrics["val_loss"] = 0.5 * (metrics["mix/loss"] + metrics["target/loss"])
    return metrics

  def write_examples(self, writer, step, batch, outputs):
    cfg = self.cfg
    if not cfg.train.audio_every or (step % cfg.train.audio_every and step != cfg.train.num_steps):
      return
    for name in ("mix", "target"):
      orig = np.asarray(batch[name][0])
      rec = sharding.local_rows(outputs[name])[0]   # row 0 of process 0 is its batch[name][0]
      writer.audio(step, f"audio/{name}_original", orig, cfg.sample_rate)
      writer.audio(step, f"audio/{name}_reconstruction", rec, cfg.sample_rate)
      writer.spectrogram(step, f"spectrogram/{name}", {"original": orig, "reconstruction": rec},
                         cfg.sample_rate)

  def keys(self):
    # The evaluation's latent noise (when `loss.latent_noise_std` > 0) always uses key 0.
    init_key, step_key = jax.random.split(jax.random.key(self.cfg.seed))
    return init_key, step_key, jax.random.key(0)

  def train_data(self, batch_size, seed=None):
    cfg = self.cfg
    return pipeline.make_train_dataset(
        cfg.data.train_dir, crop_samples=cfg.data.crop_samples, batch_size=batch_size,
        seed=cfg.seed if seed is None else seed, silence_threshold_db=cfg.data.silence_threshold_db,
        gain_db_range=tuple(cfg.data.gain_db_range), worker_count=cfg.data.worker_count)

  def val_batches(self, batch_size):
    cfg = self.cfg
    return list(pipeline.make_eval_dataset(
        cfg.data.val_dir or cfg.data.train_dir, crop_samples=cfg.data.crop_samples,
        batch_size=batch_size, num_examples=cfg.data.num_val_examples, seed=cfg.seed))

  def init_state(self, s, key):
    """Random, or with `train.init_from` (an autoencoder export, workdir or bundle of the same
    architecture) that model's weights (fine-tuning with new losses)."""
    init_from = self.cfg.train.get("init_from", "")
    if not init_from:
      if self.cfg.train.get("freeze_encoder", False):
        raise BassgenError("train.freeze_encoder fine-tunes the decoder of train.init_from; set "
                           "--config.train.init_from=AUTOENCODER_EXPORT")
      return common.create_state(self, s, key)
    directory = codec_lib.find_export(init_from, "autoencoder")
    meta = checkpointing.load_meta(directory)
    theirs = meta.get("config", {}).get("model")
    if meta.get("kind") != "autoencoder" or theirs is None or theirs != json.loads(
        json.dumps(self.cfg.model.to_dict())):
      raise BassgenError(f"{directory}: train.init_from must be an autoencoder export with the "
                         "same model section as this config (configs/autoencoder.py); its "
                         "architecture differs. Train from scratch with --config.train.init_from=''.")
    params = checkpointing.load_params(directory, s.abstract_state["params"])
    logging.info("initialised the parameters from %s (step %s)", directory, meta.get("step"))
    return common.state_from_params(s, jax.tree.map(lambda x: x.astype(jnp.float32), params))

  def export(self, directory, s, state, step):
    """The EMA model with the per-channel statistics of its latents (`stats_batches` batches)."""
    cfg = self.cfg
    if cfg.train.get("freeze_encoder", False):
      # The encoder is `init_from`'s, so are its latents: keep its statistics as they are, and
      # latent caches and diffusion models made with it stay valid.
      meta = checkpointing.load_meta(codec_lib.find_export(cfg.train.init_from, "autoencoder"))
      mean = np.asarray(meta["latent_mean"], np.float32)
      std = np.asarray(meta["latent_std"], np.float32)
    else:
      stats_iter = iter(self.train_data(sharding.process_batch_size(cfg.train.batch_size),
                                        seed=cfg.seed + 1))
      batches = [next(stats_iter) for _ in range(cfg.train.stats_batches)]
      mean, std = latent_statistics(cfg, s, state["ema"], batches)
    export_model(directory, cfg, state["ema"], mean, std, step)


def _forward(model: Autoencoder, wav_BxS, noise_key, cfg):
  _, feat_true = model.analysis(wav_BxS)
  z = model.encoder(feat_true)
  if cfg.train.get("freeze_encoder", False):
    # Decoder-only fine-tuning: no gradient reaches the encoder, so its weights (and the latent
    # space a diffusion model was trained on) stay exactly as `init_from` left them.
    z = jax.lax.stop_gradient(z)
  if cfg.loss.latent_noise_std > 0:
    z = z + cfg.loss.latent_noise_std * jax.random.normal(noise_key, z.shape, z.dtype)
  feat_pred = model.decoder(z)
  wav_pred = model.synthesis(feat_pred)
  terms = autoencoder_losses.reconstruction_losses(
      feat_pred, feat_true, wav_pred, wav_BxS, z, cfg.loss, cfg.sample_rate)
  return terms, wav_pred


# The task's pieces by name, as tests, benchmarks and notebooks use them.

def build_model(cfg: ml_collections.ConfigDict, key: jax.Array) -> Autoencoder:
  return AutoencoderTask(cfg).build_model(key)


def setup(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Setup:
  return common.setup(AutoencoderTask(cfg), mesh)


def create_state(cfg: ml_collections.ConfigDict, s: Setup, key: jax.Array) -> dict:
  return AutoencoderTask(cfg).init_state(s, key)


def make_train_step(cfg: ml_collections.ConfigDict, s: Setup):
  return common.make_train_step(AutoencoderTask(cfg), s)


def make_eval_step(cfg: ml_collections.ConfigDict, s: Setup):
  return common.make_eval_step(AutoencoderTask(cfg), s)


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains (resuming from `workdir` if it holds a checkpoint), then exports the EMA model with
  its latent statistics to `workdir/export`; see `common.train_and_evaluate`."""
  return common.train_and_evaluate(AutoencoderTask(cfg), workdir)


def latent_statistics(cfg: ml_collections.ConfigDict, s: Setup, params: Any,
                      batches: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of the latents of mixes and bass stems (what the LDM normalises by)."""
  del cfg

  @jax.jit
  def moments(p, wav):
    z = common.merge(s, p).encode(wav)
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


def export_model(directory: pathlib.Path, cfg: ml_collections.ConfigDict, params: Any,
                 latent_mean: np.ndarray, latent_std: np.ndarray, step: int) -> None:
  """The inference bundle: EMA parameters, config and latent statistics."""
  meta = {"kind": "autoencoder", "config": cfg.to_dict(), "step": int(step),
          "latent_mean": [float(x) for x in latent_mean],
          "latent_std": [float(x) for x in latent_std]}
  checkpointing.save_params(directory, sharding.to_host(params), meta)
  logging.info("exported the EMA autoencoder to %s", directory)
