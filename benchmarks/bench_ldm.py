"""Diffusion speed: sampling a whole mix (guided, one pass) and the train-step time.

  .venv/bin/python benchmarks/bench_ldm.py --config configs/ldm.py:paper --seconds 180

Random weights (speed does not depend on training). Sampling runs the jitted sampler on the mix
latent padded to its length bucket, conditional and null-condition passes as one batch; the
autoencoder's encode and decode (the paper autoencoder at its own rate) are timed with it. The
first call (compilation) is reported separately; peak memory is the process's maximum RSS, read
once after sampling (the sampling row) and again after the train steps.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import flops  # benchmarks/flops.py (this folder is on sys.path when run as a script)
import jax
import jax.numpy as jnp
import numpy as np


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/ldm.py:paper")
  parser.add_argument("--autoencoder-config", default=None,
                      help="default: the autoencoder variant with the same name")
  parser.add_argument("--seconds", type=float, default=180.0)
  parser.add_argument("--sampler", default="dpmpp2m")
  parser.add_argument("--steps", type=int, default=32)
  parser.add_argument("--train-steps", type=int, default=2)
  args = parser.parse_args()

  from flax import nnx  # pylint: disable=g-import-not-at-top

  from bassgen import generation, samplers, sharding  # pylint: disable=g-import-not-at-top
  from bassgen.codec import Codec  # pylint: disable=g-import-not-at-top
  from bassgen.config_loading import load_config  # pylint: disable=g-import-not-at-top
  from bassgen.models import unet  # pylint: disable=g-import-not-at-top
  from bassgen.trainers import autoencoder as ae_trainer  # pylint: disable=g-import-not-at-top
  from bassgen.trainers import ldm as trainer  # pylint: disable=g-import-not-at-top

  cfg = load_config(args.config)
  ae_cfg = load_config(args.autoencoder_config or f"configs/autoencoder.py:{cfg.variant}")
  ae_params = nnx.to_pure_dict(nnx.state(ae_trainer.build_model(ae_cfg, jax.random.key(0))))
  c = ae_cfg.model.latent_channels
  codec = Codec(ae_cfg, ae_params, np.zeros(c), np.ones(c))
  model = trainer.build_model(cfg, jax.random.key(1))
  model.eval()
  graphdef, state = nnx.split(model)
  sample_fn = samplers.make_sampler(graphdef, sigma_data=cfg.diffusion.sigma_data,
                                    sampler=args.sampler, steps=args.steps)
  scfg = cfg.sample
  scfg.guidance_w = max(float(scfg.guidance_w), 2.0)  # guidance on: the 2B-batch path
  mix = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * codec.sample_rate))
         ).astype(np.float32)

  def run():
    cond = generation.condition(codec, cfg.model, mix, codec.encode(mix))
    out = samplers.generate(sample_fn, state, jnp.asarray(cond)[None], cfg=scfg,
                            length_multiple=unet.length_multiple(cfg.model),
                            key=jax.random.key(0))
    return codec.decode(np.asarray(out)[0], len(mix))

  t = time.perf_counter()
  run()
  first = time.perf_counter() - t
  t = time.perf_counter()
  run()
  wall = time.perf_counter() - t
  frames = codec.num_latent_frames(len(mix))
  # Peak RSS of everything so far (models, compile, two sampling runs), before the train step,
  # whose activations (a whole training batch on one device) dwarf sampling's.
  sample_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

  mesh = sharding.make_mesh((-1, 1))
  s = trainer.setup(cfg, mesh)
  tstate = trainer.create_state(cfg, s, jax.random.key(0))
  step = trainer.make_train_step(cfg, s)
  rng = np.random.default_rng(0)
  shape = (cfg.train.batch_size, cfg.train.crop_frames, cfg.model.latent_channels)
  cond_shape = shape[:2] + (unet.cond_channels(cfg.model),)
  host = {"mix": rng.standard_normal(cond_shape).astype(np.float32),
          "target": rng.standard_normal(shape).astype(np.float32)}
  if unet.harmony_enabled(cfg.model):
    host["labels"] = rng.integers(0, 13, shape[:2]).astype(np.int32)
  if unet.onsets_enabled(cfg.model):
    host["onsets"] = rng.integers(0, 2, shape[:2]).astype(np.int32)
  batch = sharding.global_batch(host, mesh)
  tstate, m = step(tstate, batch, jax.random.key(0))
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(args.train_steps):
    tstate, m = step(tstate, batch, jax.random.key(0))
  jax.block_until_ready(m)
  step_s = (time.perf_counter() - t) / args.train_steps
  step_flops = flops.compiled_flops(step, tstate, batch, jax.random.key(0))

  # The sampler's FLOPs: one guided model evaluation (conditional and null passes as one batch)
  # at the bucket's length, from its compiled program, times one evaluation per step
  # (Euler, DPM++(2M); Heun makes two). Its time: the sampler alone, without the codec.
  bucket = samplers.bucket_length(frames, scfg.bucket_multiple, scfg.buckets)
  cond = generation.condition(codec, cfg.model, mix, codec.encode(mix))
  cond_b = np.pad(cond, ((0, bucket - len(cond)), (0, 0)), mode="reflect")[None]
  knobs = samplers.sampler_knobs(scfg)
  x = np.zeros((1, bucket, cfg.model.latent_channels), np.float32)

  def one_evaluation(st, x_BxTxC, cond_BxTxC):
    denoise_fn, net = samplers.model_denoiser(graphdef, st, cfg.diffusion.sigma_data)
    full = samplers.complete_condition(net, cond_BxTxC, knobs)
    guided = samplers.guided_denoiser(denoise_fn, guidance_w=knobs["guidance_w"],
                                      rescale_phi=knobs["rescale_phi"])
    return guided(x_BxTxC, jnp.ones((1,)), full)

  evals = args.steps * (2 if args.sampler == "heun" else 1)
  sampler_flops = evals * flops.compiled_flops(jax.jit(one_evaluation), state, x, cond_b)
  t = time.perf_counter()
  samplers.generate(sample_fn, state, cond[None], cfg=scfg,
                    length_multiple=unet.length_multiple(cfg.model), key=jax.random.key(0))
  sampler_s = time.perf_counter() - t
  ceiling = flops.matmul_ceiling()

  print(json.dumps({
      "config": args.config, "device": jax.devices()[0].device_kind,
      "unet_params": unet.count_params(model), "mix_seconds": args.seconds,
      "latent_frames": frames,
      "bucket": samplers.bucket_length(frames, scfg.bucket_multiple, scfg.buckets),
      "sampler": args.sampler, "steps": args.steps, "guidance": True,
      "wall_s": round(wall, 2), "x_real_time": round(args.seconds / wall, 3),
      "first_call_s": round(first, 2),
      "sampling_peak_rss_gib": round(sample_peak, 2),
      "peak_rss_gib_with_train_step": round(
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
      "train_step_s": round(step_s, 3),
      "train_batch": f"{cfg.train.batch_size} x {cfg.train.crop_frames} latent frames",
      "matmul_ceiling_gflops": ceiling["gflops"],
      "sampler_s": round(sampler_s, 2),
      "sampler": flops.rate(sampler_flops, sampler_s, ceiling["gflops"]),
      "train_step": flops.rate(step_flops, step_s, ceiling["gflops"]),
  }))


if __name__ == "__main__":
  main()
