"""Shared test helpers: a bundle of runlocal models with random weights, exported like trained ones
(the CLI behaviour under test does not depend on training)."""
import pathlib

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
