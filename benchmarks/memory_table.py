r"""Per-device memory of the `paper` training steps on several (data x fsdp) meshes, read from the
compiled programs' own memory analysis (XLA's buffer assignment), not estimated by hand.

  .venv/bin/python benchmarks/memory_table.py --devices 8 --meshes 8x1,2x4,1x8

For each config and mesh the train step is lowered with the state's and the batch's real
shardings (abstract values: nothing is allocated) and compiled for fake CPU devices; the
program is SPMD-partitioned, so each figure is one device's:

- parameters / EMA / Adam moments: the bytes of this device's shards of the state (from the
  compiled program's input layouts);
- arguments, outputs, temporaries: `compiled.memory_analysis()` (temporaries are the activations
  kept for the backward pass plus XLA's scratch); state is donated, so outputs alias arguments;
- peak: arguments + temporaries + outputs not aliased to arguments.

TPU and GPU compilers lay out buffers differently (and fuse more), so treat CPU figures as the
shape of the table, not a promise for a given chip. Prints a markdown table (docs/scaling.md).
"""
from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--devices", type=int, default=8, help="fake CPU devices")
  p.add_argument("--meshes", default="8x1,2x4,1x8", help="data x fsdp shapes, comma separated")
  p.add_argument("--configs", default="configs/autoencoder.py:paper,configs/ldm.py:paper")
  args = p.parse_args()
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from bassgen import sharding  # pylint: disable=g-import-not-at-top
  from bassgen.config_loading import load_config  # pylint: disable=g-import-not-at-top
  from bassgen.models import unet  # pylint: disable=g-import-not-at-top
  from bassgen.trainers import autoencoder, ldm  # pylint: disable=g-import-not-at-top

  def shard_bytes(tree) -> int:
    return int(sum(np.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                   for x in jax.tree.leaves(tree)))

  def batch_of(cfg, mesh):
    b = cfg.train.batch_size
    if cfg.kind == "autoencoder":
      shapes = {"mix": ((b, cfg.data.crop_samples), np.float32),
                "target": ((b, cfg.data.crop_samples), np.float32)}
    else:
      t, c = cfg.train.crop_frames, cfg.model.latent_channels
      shapes = {"mix": ((b, t, unet.cond_channels(cfg.model)), np.float32),
                "target": ((b, t, c), np.float32)}
      if unet.harmony_enabled(cfg.model):
        shapes["labels"] = ((b, t), np.int32)
      if unet.onsets_enabled(cfg.model):
        shapes["onsets"] = ((b, t), np.int32)
    return {k: jax.ShapeDtypeStruct(s, d, sharding=sharding.batch_sharding(mesh, len(s)))
            for k, (s, d) in shapes.items()}

  gib = lambda n: f"{n / 2**30:.2f}"
  print("| config | batch | mesh (data x fsdp) | parameters | EMA | Adam moments | arguments | "
        "temporaries (activations) | outputs not aliased | peak | compile |")
  print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  import time  # pylint: disable=g-import-not-at-top
  for config in args.configs.split(","):
    cfg = load_config(config)
    trainer = autoencoder if cfg.kind == "autoencoder" else ldm
    for mesh_arg in args.meshes.split(","):
      data, fsdp = (int(v) for v in mesh_arg.split("x"))
      cfg.mesh.data, cfg.mesh.fsdp = data, fsdp
      mesh = sharding.mesh_from_config(cfg.mesh)
      s = trainer.setup(cfg, mesh)
      step = trainer.make_train_step(cfg, s)
      t0 = time.perf_counter()
      compiled = step.lower(s.abstract_state, batch_of(cfg, mesh), jax.random.key(0)).compile()
      seconds = time.perf_counter() - t0
      ma = compiled.memory_analysis()
      state = s.abstract_state
      peak = (ma.argument_size_in_bytes + ma.temp_size_in_bytes
              + ma.output_size_in_bytes - ma.alias_size_in_bytes)
      what = ("crops of " + str(cfg.data.crop_samples) + " samples" if cfg.kind == "autoencoder"
              else f"x {cfg.train.crop_frames} latent frames")
      print(f"| `{config}` | {cfg.train.batch_size} {what} | {data} x {fsdp} | "
            f"{gib(shard_bytes(state['params']))} | {gib(shard_bytes(state['ema']))} | "
            f"{gib(shard_bytes(state['opt']))} | {gib(ma.argument_size_in_bytes)} | "
            f"{gib(ma.temp_size_in_bytes)} | "
            f"{gib(ma.output_size_in_bytes - ma.alias_size_in_bytes)} | **{gib(peak)}** | "
            f"{seconds:.0f} s |", flush=True)
  print(f"\nGiB per device; {args.devices} fake CPU devices, jax {jax.__version__}; "
        f"`{' '.join(sys.argv)}`")


if __name__ == "__main__":
  main()
