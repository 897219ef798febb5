r"""Config-driven entry point.

  python -m bassgen.main --config=configs/autoencoder.py:demo --workdir=runs/ae_demo [--mode=train]
  python -m bassgen.main --config=configs/ldm.py:demo --workdir=runs/ldm_demo --config.optim.lr=3e-4

On a multi-host TPU/GPU slice, run the same command on every host with `--distributed`: on TPU
pods, SLURM and other clusters JAX finds the coordinator in the environment; elsewhere (e.g. two
machines or two CPU processes) give it:

  python -m bassgen.main --config=... --workdir=... --distributed \
      --coordinator=HOST0:1234 --num-processes=2 --process-id=0   # and --process-id=1 on the other
"""
import sys

import jax
from absl import app, flags, logging

from bassgen import config_loading, numba_cache, runner, sharding
from bassgen.errors import BassgenError

_CONFIG = flags.DEFINE_string("config", None, "configs/NAME.py[:variant]; override any field with "
                              "--config.FIELD=VALUE (e.g. --config.optim.lr=3e-4)")
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, logs and exports go here")
_MODE = flags.DEFINE_string(
    "mode", "train", "train | sample (ldm configs) | eval (configs/eval.py)")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "call jax.distributed.initialize() (multi-host slices)")
_COORDINATOR = flags.DEFINE_string(
    "coordinator", None, "with --distributed: HOST:PORT of process 0 (default: from the cluster's "
    "environment, e.g. a TPU pod or SLURM)")
_NUM_PROCESSES = flags.DEFINE_integer("num-processes", None,
                                      "with --distributed: how many processes take part")
_PROCESS_ID = flags.DEFINE_integer("process-id", None,
                                   "with --distributed: this process's index, 0 .. num-processes - 1")
flags.mark_flags_as_required(["config"])


def main(argv):
  numba_cache.configure()   # before librosa compiles anything (see bassgen/numba_cache.py)
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    cfg = config_loading.load_config(_CONFIG.value, argv[1:])   # the --config.* overrides
    if _DISTRIBUTED.value:
      sharding.initialize_distributed(*explicit)
    elif any(v is not None for v in explicit):
      raise BassgenError("--coordinator/--num-processes/--process-id need --distributed")
    logging.info("JAX %s: process %d/%d, %d local / %d global devices (%s)", jax.__version__,
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count(), jax.devices()[0].platform)
    runner.run(cfg, _WORKDIR.value or f"runs/{cfg.kind}_{cfg.variant}", _MODE.value)
  except BassgenError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flags, with the `--config.FIELD=VALUE` overrides set aside for `load_config` (which
  parses them with ml_collections); returns [program, *overrides]. A bad flag is one line."""
  overrides = [a for a in argv[1:] if a.startswith("--config.")]
  try:
    rest = flags.FLAGS([a for a in argv if not a.startswith("--config.")])
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if len(rest) > 1:
    print(f"error: unexpected argument {rest[1]!r}: flags are --name=value, config fields "
          "--config.FIELD=VALUE", file=sys.stderr)
    sys.exit(1)
  return rest[:1] + overrides


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
