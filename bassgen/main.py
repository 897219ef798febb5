r"""Config-driven entry point.

  python -m bassgen.main --config=configs/autoencoder.py:demo --workdir=runs/ae_demo [--mode=train]
  python -m bassgen.main --config=configs/ldm.py:demo --workdir=runs/ldm_demo --config.optim.lr=3e-4

On a multi-host TPU/GPU slice, run the same command on every host with `--distributed`.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/NAME.py[:variant]",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, logs and exports go here")
_MODE = flags.DEFINE_string(
    "mode", "train", "train | sample (ldm configs) | eval (configs/eval.py)")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "call jax.distributed.initialize() (multi-host slices)")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top

  from bassgen import runner  # pylint: disable=g-import-not-at-top
  from bassgen.errors import BassgenError  # pylint: disable=g-import-not-at-top

  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  logging.info("JAX %s: process %d/%d, %d local / %d global devices (%s)", jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  try:
    runner.run(_CONFIG.value, _WORKDIR.value or f"runs/{_CONFIG.value.kind}_{_CONFIG.value.variant}",
               _MODE.value)
  except BassgenError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
