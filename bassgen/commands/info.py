"""`bassgen info --config configs/autoencoder.py:paper`: shapes and parameter counts of a config."""
from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx

from bassgen.config_loading import load_config
from bassgen.models.autoencoder import Autoencoder, AutoencoderConfig
from bassgen.models.layers import count_params
from bassgen.models.unet import UNet1D, UNetConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", required=True, help="configs/autoencoder.py[:variant] or configs/ldm.py[:variant]")
  parser.add_argument("--seconds", type=float, default=None,
                      help="audio length to show shapes for (default: 2**20 samples)")


def run(args: argparse.Namespace) -> int:
  cfg = load_config(args.config)
  if cfg.kind == "autoencoder":
    model = nnx.eval_shape(
        lambda: Autoencoder(AutoencoderConfig.from_config(cfg.model), rngs=nnx.Rngs(0)))
    num_samples = int(args.seconds * cfg.sample_rate) if args.seconds else 2**20
    spl = cfg.model.hop * 2 ** cfg.model.num_down
    num_samples = -(-num_samples // spl) * spl
    graphdef, state = nnx.split(model)
    z = jax.eval_shape(lambda st, x: nnx.merge(graphdef, st).encode(x), state,
                       jax.ShapeDtypeStruct((1, num_samples), np.float32))
    wav = jax.eval_shape(lambda st, x: nnx.merge(graphdef, st).decode(x), state, z)
    frames_per_sec = cfg.sample_rate / spl
    ratio = spl / cfg.model.latent_channels
    print(f"autoencoder ({cfg.variant}): {count_params(model):,} parameters")
    print(f"  sample rate {cfg.sample_rate} Hz, STFT n_fft {cfg.model.n_fft} hop {cfg.model.hop}, "
          f"time down-sampling x{2 ** cfg.model.num_down}")
    print(f"  {num_samples} samples ({num_samples / cfg.sample_rate:.2f} s) -> latent "
          f"{z.shape[1]} x {z.shape[2]} -> {wav.shape[1]} samples")
    print(f"  {frames_per_sec:.2f} latent frames/s, {spl} samples per frame, "
          f"{cfg.model.latent_channels} values per frame: {ratio:g}x compression")
  else:
    model = nnx.eval_shape(lambda: UNet1D(UNetConfig.from_config(cfg.model), rngs=nnx.Rngs(0)))
    print(f"latent diffusion U-Net ({cfg.variant}): {count_params(model):,} parameters")
  return 0
