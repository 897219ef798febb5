r"""Config-driven entry point.

  python -m bassgen.main --config=configs/autoencoder.py:demo --workdir=runs/ae_demo [--mode=train]
  python -m bassgen.main --config=configs/ldm.py:demo --workdir=runs/ldm_demo --config.optim.lr=3e-4

On a multi-host TPU/GPU slice, run the same command on every host with `--distributed`: on TPU
pods, SLURM and other clusters JAX finds the coordinator in the environment; elsewhere (e.g. two
machines or two CPU processes) give it:

  python -m bassgen.main --config=... --workdir=... --distributed \
      --coordinator=HOST0:1234 --num-processes=2 --process-id=0   # and --process-id=1 on the other
"""
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bassgen import numba_cache

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/NAME.py[:variant]",
                                          lock_config=False)
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
  del argv
  numba_cache.configure()   # before librosa compiles anything (see bassgen/numba_cache.py)
  import jax  # pylint: disable=g-import-not-at-top

  from bassgen import runner, sharding  # pylint: disable=g-import-not-at-top
  from bassgen.errors import BassgenError  # pylint: disable=g-import-not-at-top

  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    if _DISTRIBUTED.value:
      sharding.initialize_distributed(*explicit)
    elif any(v is not None for v in explicit):
      raise BassgenError("--coordinator/--num-processes/--process-id need --distributed")
    logging.info("JAX %s: process %d/%d, %d local / %d global devices (%s)", jax.__version__,
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count(), jax.devices()[0].platform)
    runner.run(_CONFIG.value, _WORKDIR.value or f"runs/{_CONFIG.value.kind}_{_CONFIG.value.variant}",
               _MODE.value)
  except BassgenError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad config, variant or override reported in one line."""
  try:
    rest = flags.FLAGS(argv)
    getattr(_CONFIG.value, "kind", None)   # ml_collections reports a missing file only on first use
    return rest
  except OSError:
    print(f"error: --config={flags.FLAGS['config'].config_filename}: no such config file. Use "
          "e.g. configs/autoencoder.py:demo.", file=sys.stderr)
  except flags.Error as e:   # e.g. an unknown variant: the config file's own message, not its trace
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    if "Traceback" in str(e):   # "flag --config=...: Error whilst parsing ...:" + trace + "Err: why"
      lines = [f"{lines[0].split(': ')[0]}: {lines[-1].split(': ', 1)[-1]}"]
    print(f"error: {lines[0]}", file=sys.stderr)
  except (AttributeError, KeyError) as e:   # ml_collections: an override of a field that is not there
    field = (re.findall(r"\w+", str(e)) or ["?"])[0]
    hint = re.search(r'Did you mean "(\w+)"', str(e))
    bad = [a.split("=")[0] for a in argv[1:]
           if a.startswith("--config.") and field in a.split("=")[0].split(".")] or ["--config.*"]
    print(f"error: {bad[0]}: the config has no field {field!r}"
          f"{f' (did you mean {hint[1]!r}?)' if hint else ''}. Check the name against the config "
          "file.", file=sys.stderr)
  sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
