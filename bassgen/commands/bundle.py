"""`bassgen bundle --autoencoder DIR --ldm DIR --out DIR`: a small inference bundle.

Copies the two exports (EMA weights, configs, latent statistics) into OUT/autoencoder and OUT/ldm,
storing the weights as float16 (half the size; they are cast back to float32 when loaded). This is
how experiments/demo is made; `bassgen sample --checkpoint OUT` reads it.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--autoencoder",
                      help="autoencoder workdir or export (omit to keep OUT/autoencoder as it is)")
  parser.add_argument("--ldm", help="diffusion workdir or export (optional: autoencoder only)")
  parser.add_argument("--out", required=True, help="bundle folder (its two sub-folders are replaced)")
  parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
  parser.add_argument("--sample", action="append", default=[], metavar="KEY=VALUE",
                      help="default sampler setting stored in the bundle, e.g. guidance_w=4 "
                           "(repeatable; keys of the `sample` section of configs/ldm.py)")


def _copy(kind: str, src, dst, dtype: str, sample_overrides: dict | None = None) -> int:
  import shutil  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from bassgen import checkpointing  # pylint: disable=g-import-not-at-top
  from bassgen.codec import find_export  # pylint: disable=g-import-not-at-top
  from bassgen.errors import BassgenError  # pylint: disable=g-import-not-at-top

  directory = find_export(src, kind)
  meta = checkpointing.load_meta(directory)
  if meta.get("kind") != kind:
    raise BassgenError(f"{directory}: not a {kind} export (kind={meta.get('kind')!r})")
  params = checkpointing.load_params(directory, _abstract(kind, meta))
  params = jax.tree.map(lambda x: np.asarray(x).astype(dtype), params)
  if kind == "ldm":
    meta = dict(meta, autoencoder_checkpoint="../autoencoder",
                config=checkpointing.model_config(meta["config"]))
    if sample_overrides:
      unknown = sorted(set(sample_overrides) - set(meta["config"]["sample"]))
      if unknown:
        raise BassgenError(f"--sample {unknown[0]}: not a sampler setting; choose from "
                           f"{', '.join(sorted(meta['config']['sample']))}")
      config = dict(meta["config"])
      config["sample"] = dict(config["sample"], **sample_overrides)
      meta["config"] = config
  if dst.exists():
    shutil.rmtree(dst)
  checkpointing.save_params(dst, params, meta)
  return sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())


def _abstract(kind: str, meta: dict):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  cfg = ml_collections.ConfigDict(meta["config"])
  if kind == "autoencoder":
    from bassgen.models.autoencoder import Autoencoder, AutoencoderConfig  # pylint: disable=g-import-not-at-top
    model = nnx.eval_shape(
        lambda: Autoencoder(AutoencoderConfig.from_config(cfg.model), rngs=nnx.Rngs(0)))
  else:
    from bassgen.models.unet import UNet1D, UNetConfig  # pylint: disable=g-import-not-at-top
    model = nnx.eval_shape(lambda: UNet1D(UNetConfig.from_config(cfg.model), rngs=nnx.Rngs(0)))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def run(args: argparse.Namespace) -> int:
  import pathlib  # pylint: disable=g-import-not-at-top

  import ast  # pylint: disable=g-import-not-at-top

  from bassgen.errors import BassgenError  # pylint: disable=g-import-not-at-top

  out = pathlib.Path(args.out)
  overrides = {}
  for item in args.sample:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise BassgenError(f"--sample {item!r}: write it as KEY=VALUE, e.g. guidance_w=4")
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
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
