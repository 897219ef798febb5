"""Dispatch of a config-driven run to a trainer or a mode; shared by `bassgen.main` and the CLI."""
from __future__ import annotations

import logging

import ml_collections

from bassgen.errors import BassgenError


def run(cfg: ml_collections.ConfigDict, workdir: str, mode: str) -> None:
  logging.getLogger().setLevel(logging.INFO)
  if mode == "train":
    if cfg.kind == "autoencoder":
      from bassgen.trainers import autoencoder  # pylint: disable=g-import-not-at-top
      autoencoder.train_and_evaluate(cfg, workdir)
    elif cfg.kind == "ldm":
      from bassgen.trainers import ldm  # pylint: disable=g-import-not-at-top
      ldm.train_and_evaluate(cfg, workdir)
    else:
      raise BassgenError(f"config kind {cfg.kind!r} cannot be trained")
  else:
    raise BassgenError(f"unknown --mode {mode!r} for a {cfg.kind} config (use train)")
