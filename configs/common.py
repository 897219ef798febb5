"""Sections every training config shares (not a config itself): the optimiser, the training
cadence, the data folders and the device mesh. `autoencoder.py` and `ldm.py` load this file next
to them and override per variant:

    common = _common()                  # in a config file
    c.optim = common.optim(lr=1e-3, warmup_steps=200, ema_decay=0.999)
"""
from __future__ import annotations

from typing import Sequence

import ml_collections

from bassgen import sharding


def optim(*, lr: float, warmup_steps: int, ema_decay: float) -> ml_collections.ConfigDict:
  """AdamW with linear warm-up, cosine decay and global-norm clipping (trainers/common.py)."""
  o = ml_collections.ConfigDict()
  o.lr = lr
  o.warmup_steps = warmup_steps
  o.end_lr_factor = 0.05       # cosine decay to lr * end_lr_factor at num_steps
  o.b1 = 0.9
  o.b2 = 0.99
  o.weight_decay = 0.0
  o.clip_norm = 1.0
  o.ema_decay = ema_decay      # the exported weights are the EMA
  return o


def train(*, batch_size: int, num_steps: int, max_minutes: float, log_every: int,
          eval_every: int, ckpt_every: int, keep_checkpoints: int = 2) -> ml_collections.ConfigDict:
  """The host loop's cadence (trainers/common.py)."""
  t = ml_collections.ConfigDict()
  t.batch_size = batch_size          # global examples per step, split over every device
  t.num_steps = num_steps
  t.max_minutes = max_minutes        # > 0: stop (checkpoint, export) after this many minutes
  t.log_every = log_every
  t.eval_every = eval_every
  t.ckpt_every = ckpt_every
  t.keep_checkpoints = keep_checkpoints
  return t


def data(*, silence_threshold_db: float, num_val_examples: int,
         gain_db_range: Sequence[float] = (-9.0, 3.0)) -> ml_collections.ConfigDict:
  """Prepared audio (`bassgen prepare`, written by `make data`) and the random-mix rule."""
  d = ml_collections.ConfigDict()
  d.train_dir = "data/prepared/train"
  d.val_dir = "data/prepared/test"
  d.gain_db_range = tuple(gain_db_range)       # random gain per stem in a training mix
  d.silence_threshold_db = silence_threshold_db  # crops whose bass is quieter are redrawn
  d.num_val_examples = num_val_examples
  return d


def mesh(min_shard_size: int = 2**14) -> ml_collections.ConfigDict:
  """Devices: mesh.data x mesh.fsdp (-1 = the rest); weights of >= mesh.min_shard_size elements
  split their output channels over fsdp, smaller ones stay replicated (bassgen/sharding.py)."""
  return sharding.mesh_config(min_shard_size=min_shard_size)
