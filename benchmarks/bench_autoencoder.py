"""Autoencoder speed: encode + decode of 60 s of audio (x real time), and the train-step time.

  .venv/bin/python benchmarks/bench_autoencoder.py --config configs/autoencoder.py:paper

Random weights (speed does not depend on training). Encoding/decoding goes through `Codec`, the
chunked path every command uses; the first call (compilation) is timed separately.
"""
from __future__ import annotations

import argparse
import json
import time

import flops  # benchmarks/flops.py (this folder is on sys.path when run as a script)
import jax
import jax.numpy as jnp
import numpy as np


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/autoencoder.py:paper")
  parser.add_argument("--seconds", type=float, default=60.0)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--train-steps", type=int, default=3)
  args = parser.parse_args()

  from flax import nnx  # pylint: disable=g-import-not-at-top

  from bassgen import sharding  # pylint: disable=g-import-not-at-top
  from bassgen.codec import Codec  # pylint: disable=g-import-not-at-top
  from bassgen.config_loading import load_config  # pylint: disable=g-import-not-at-top
  from bassgen.trainers import autoencoder as trainer  # pylint: disable=g-import-not-at-top

  cfg = load_config(args.config)
  model = trainer.build_model(cfg, jax.random.key(0))
  params = nnx.to_pure_dict(nnx.state(model))
  c = cfg.model.latent_channels
  codec = Codec(cfg, params, np.zeros(c), np.ones(c))
  sr = cfg.sample_rate
  wav = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * sr))).astype(np.float32)

  # Every chunked call reconstruct makes (encoder and decoder), for the FLOP count.
  calls = []
  run_chunks = codec._run_chunks  # pylint: disable=protected-access

  def counting(fn, window, count, with_params=True):
    calls.append((fn, window, count))
    return run_chunks(fn, window, count, with_params)

  codec._run_chunks = counting  # pylint: disable=protected-access
  t = time.perf_counter()
  codec.reconstruct(wav)
  first = time.perf_counter() - t
  k = max(1, codec.chunk_batch)
  codec_flops = 0.0
  for fn, window, count in calls:
    for size, n in ((k, count // k), (1, count % k)):
      if n:
        x = jnp.asarray(np.stack([window(j) for j in range(size)]))
        codec_flops += n * flops.compiled_flops(fn, codec.params, x)
  times = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    codec.reconstruct(wav)
    times.append(time.perf_counter() - t)
  best = min(times)

  mesh = sharding.make_mesh((-1, 1))
  s = trainer.setup(cfg, mesh)
  state = trainer.create_state(cfg, s, jax.random.key(0))
  step = trainer.make_train_step(cfg, s)
  rng = np.random.default_rng(0)
  shape = (cfg.train.batch_size, cfg.data.crop_samples)
  batch = sharding.global_batch({"mix": (0.1 * rng.standard_normal(shape)).astype(np.float32),
                                 "target": (0.1 * rng.standard_normal(shape)).astype(np.float32)},
                                mesh)
  state, m = step(state, batch, jax.random.key(0))
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(args.train_steps):
    state, m = step(state, batch, jax.random.key(0))
  jax.block_until_ready(m)
  step_s = (time.perf_counter() - t) / args.train_steps
  step_flops = flops.compiled_flops(step, state, batch, jax.random.key(0))
  ceiling = flops.matmul_ceiling()

  result = {
      "config": args.config, "device": jax.devices()[0].device_kind,
      "devices": jax.device_count(), "audio_seconds": args.seconds,
      "encode_decode_s": round(best, 3), "x_real_time": round(args.seconds / best, 2),
      "first_call_s": round(first, 2),
      "train_step_s": round(step_s, 3),
      "train_batch": f"{cfg.train.batch_size} crops x {cfg.data.crop_samples} samples (mix + bass)",
      "matmul_ceiling_gflops": ceiling["gflops"],
      "codec": flops.rate(codec_flops, best, ceiling["gflops"]),
      "train_step": flops.rate(step_flops, step_s, ceiling["gflops"]),
  }
  print(json.dumps(result))


if __name__ == "__main__":
  main()
