"""`bassgen train --config configs/autoencoder.py:demo --workdir DIR [field=value ...]`."""
from __future__ import annotations

import argparse

from bassgen import runner
from bassgen.config_loading import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", required=True, help="configs/autoencoder.py[:variant] or configs/ldm.py[:variant]")
  parser.add_argument("--workdir", required=True, help="checkpoints, logs and the export go here")
  parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.lr=3e-4")


def run(args: argparse.Namespace) -> int:
  cfg = load_config(args.config, args.overrides)
  runner.run(cfg, args.workdir, "train")
  return 0
