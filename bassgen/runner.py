"""A loaded config run in one of its modes: train (either model), sample or eval. `bassgen.main`
and `bassgen train` both call `run`; sample and eval call the same library functions as their
`bassgen` commands."""
from __future__ import annotations

import logging

import jax
import ml_collections

from bassgen.errors import BassgenError


def run(cfg: ml_collections.ConfigDict, workdir: str, mode: str) -> None:
  # Process 0 speaks for a multi-process run; the others only warn.
  logging.getLogger().setLevel(logging.INFO if jax.process_index() == 0 else logging.WARNING)
  if mode == "train":
    if cfg.kind == "autoencoder":
      from bassgen.trainers import autoencoder  # pylint: disable=g-import-not-at-top
      autoencoder.train_and_evaluate(cfg, workdir)
    elif cfg.kind == "ldm":
      from bassgen.trainers import ldm  # pylint: disable=g-import-not-at-top
      ldm.train_and_evaluate(cfg, workdir)
    else:
      raise BassgenError(f"config kind {cfg.kind!r} cannot be trained")
  elif mode == "sample" and cfg.kind == "ldm":
    from bassgen.commands import sample  # pylint: disable=g-import-not-at-top
    s = cfg.sample
    if not s.get("mix"):
      raise BassgenError("--mode=sample needs --config.sample.mix=FILE_OR_FOLDER[,MORE]")
    sample.sample([m for m in str(s.mix).split(",") if m], style=s.get("style") or None,
                  guidance=s.guidance_w, rescale=s.rescale_phi,
                  ground_strength=s.ground_strength, steps=s.steps, sampler=s.sampler,
                  seed=s.seed, num_samples=s.get("num_samples", 1),
                  checkpoint=s.get("checkpoint") or workdir, out=s.get("out") or "samples",
                  overwrite=bool(s.get("overwrite", False)))
  elif mode == "eval" and cfg.kind == "eval":
    from bassgen.commands import eval as eval_command  # pylint: disable=g-import-not-at-top
    e = cfg.eval
    if not e.get("data") or not e.get("generated"):
      raise BassgenError("--mode=eval needs --config.eval.data=DIR and --config.eval.generated=DIR")
    fields = e.to_dict()   # the config's zeros and empty strings mean "the default"
    fields.update(steps=e.steps or None, guidance=e.guidance if e.guidance > 0 else None,
                  reference=e.reference or None, out=e.out or None,
                  baseline_data=e.baseline_data or None)
    eval_command.evaluate(**fields)
  else:
    raise BassgenError(f"--mode={mode!r} does not apply to a {cfg.kind} config (autoencoder: "
                       "train; ldm: train or sample; eval: eval)")
