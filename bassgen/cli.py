"""The `bassgen` console script. Each subcommand lives in its own module, imported only when used."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bassgen import numba_cache
from bassgen.errors import BassgenError

# name -> (module with add_arguments/run, one-line help)
COMMANDS = {
    "sample": ("bassgen.commands.sample", "generate a bass stem for mixes (the main job)"),
    "eval": ("bassgen.commands.eval", "score generated stems against a dataset and baselines"),
    "reconstruct": ("bassgen.commands.reconstruct", "pass audio through the autoencoder"),
    "train": ("bassgen.commands.train", "train a model from a config"),
    "info": ("bassgen.commands.info", "shapes and parameter counts of a config"),
    "bundle": ("bassgen.commands.bundle", "pack trained models into a small inference bundle"),
    "render": ("bassgen.data.render", "render synthetic multitrack songs and Bach chorales"),
    "prepare": ("bassgen.data.prepare", "turn a stem dataset into training shards"),
}


def _usage() -> str:
  lines = ["usage: bassgen COMMAND [options]   (bassgen COMMAND --help for its options)", "",
           "commands:"]
  lines += [f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items()]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  numba_cache.configure()   # before librosa compiles anything (see bassgen/numba_cache.py)
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] in ("-h", "--help"):
    print(_usage())
    return 0 if argv else 2
  name, rest = argv[0], argv[1:]
  if name not in COMMANDS:
    print(f"bassgen: unknown command {name!r}. Commands: {', '.join(COMMANDS)} "
          "(bassgen --help says what each does).", file=sys.stderr)
    return 2
  module_name, text = COMMANDS[name]
  if name != "train":  # library chatter (e.g. Orbax opening a read-only export) is not for users
    logging.getLogger("absl").setLevel(logging.ERROR)
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name == module_name:
      print(f"bassgen {name}: not available in this version", file=sys.stderr)
      return 2
    raise
  parser = argparse.ArgumentParser(prog=f"bassgen {name}", description=text)
  module.add_arguments(parser)
  args = parser.parse_args(rest)
  try:
    return int(module.run(args) or 0)
  except BassgenError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
