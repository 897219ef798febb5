"""`bassgen bundle --autoencoder DIR --ldm DIR --out DIR`: a small inference bundle.

Copies the two exports (EMA weights, configs, latent statistics) into OUT/autoencoder and OUT/ldm,
storing the weights as float16 (half the size; they are cast back to float32 when loaded). This is
how experiments/demo is made; `bassgen sample --checkpoint OUT` reads it.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil

import jax
import ml_collections
import numpy as np

from bassgen import checkpointing, config_loading
from bassgen.codec import abstract_autoencoder, find_export
from bassgen.errors import BassgenError
from bassgen.generation import abstract_unet


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--autoencoder",
                      help="autoencoder workdir or export (omit to keep OUT/autoencoder as it is)")
  parser.add_argument("--ldm", help="diffusion workdir or export (optional: autoencoder only)")
  parser.add_argument("--out", required=True, help="bundle folder (its two sub-folders are replaced)")
  parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
  parser.add_argument("--sample", action="append", default=[], metavar="KEY=VALUE",
                      help="default sampler setting stored in the bundle, e.g. guidance_w=4 "
                           "(repeatable; keys of the `sample` section of configs/ldm.py)")


def _copy(kind: str, src, dst, dtype: str, sample_overrides: list[str] = ()) -> int:
  directory = find_export(src, kind)
  meta = checkpointing.load_meta(directory)
  if meta.get("kind") != kind:
    raise BassgenError(f"{directory}: not a {kind} export (kind={meta.get('kind')!r})")
  cfg = ml_collections.ConfigDict(meta["config"])
  shapes = abstract_autoencoder(cfg)[1] if kind == "autoencoder" else abstract_unet(cfg)[1]
  params = checkpointing.load_params(directory, shapes)
  params = jax.tree.map(lambda x: np.asarray(x).astype(dtype), params)
  if kind == "ldm":
    config = checkpointing.model_config(meta["config"])
    if sample_overrides:   # typed and checked against the model's `sample` section
      keys = {o.removeprefix("--sample.").split("=")[0].split(".")[0] for o in sample_overrides}
      unknown = sorted(keys - set(config["sample"]))
      if unknown:
        raise BassgenError(f"--sample {unknown[0]}: not a sampler setting; choose from "
                           f"{', '.join(sorted(config['sample']))}")
      sample = config_loading.override(ml_collections.ConfigDict(config["sample"]),
                                       sample_overrides, name="sample")
      config = dict(config, sample=sample.to_dict())
    meta = dict(meta, autoencoder_checkpoint="../autoencoder", config=config)
  if dst.exists():
    shutil.rmtree(dst)
  checkpointing.save_params(dst, params, meta)
  return sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())


def run(args: argparse.Namespace) -> int:
  out = pathlib.Path(args.out)
  overrides = [config_loading.override_flag(item, "sample") for item in args.sample]
  if overrides and not args.ldm:
    raise BassgenError("--sample sets the diffusion model's defaults: give --ldm too")
  if args.autoencoder is None and not (out / "autoencoder").is_dir():
    raise BassgenError(f"{out / 'autoencoder'}: missing. Give --autoencoder WORKDIR.")
  out.mkdir(parents=True, exist_ok=True)
  total = 0
  if args.autoencoder is not None:
    total += _copy("autoencoder", args.autoencoder, out / "autoencoder", args.dtype)
  if args.ldm:
    total += _copy("ldm", args.ldm, out / "ldm", args.dtype, overrides)
  print(f"wrote {out} ({total / 2**20:.1f} MiB)")
  return 0
