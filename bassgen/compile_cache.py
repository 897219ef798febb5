"""JAX's persistent compilation cache for the commands a user runs again and again.

`bassgen sample` compiles the codec's chunk functions and one sampler per length bucket; without a
cache every new process compiles them again (seconds on a CPU). With it, a second process loads
what an earlier one compiled and compiles nothing it compiled before.

The cache lives in `$BASSGEN_JAX_CACHE_DIR` when set, else `$XDG_CACHE_HOME/bassgen/jax`
(`~/.cache/bassgen/jax`). `BASSGEN_JAX_CACHE_DIR=off` (or `0`, `none`, empty) turns it off; a
`JAX_COMPILATION_CACHE_DIR` the user set for JAX itself is respected. Every compilation is cached,
however quick (JAX's default skips those under a second, which on a CPU is most of ours), so the
folder grows by one entry per program and shape: delete it whenever you like. `bassgen sample`
also keeps its compiled programs and model structures in `programs/` inside it (`bassgen.aot`),
which spares a later process the tracing this cache still needs to look a program up.
"""
from __future__ import annotations

import logging
import os
import pathlib

ENV = "BASSGEN_JAX_CACHE_DIR"
_OFF = ("", "0", "off", "none", "false", "no")


def cache_dir() -> pathlib.Path | None:
  """The folder bassgen caches compiled programs in, or None when turned off."""
  if ENV in os.environ:
    value = os.environ[ENV].strip()
    return None if value.lower() in _OFF else pathlib.Path(value).expanduser()
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "bassgen" / "jax"


def enable() -> pathlib.Path | None:
  """Points JAX's persistent compilation cache at `cache_dir()`; returns the folder (None: off).

  Call it before the process compiles anything: JAX decides once, at its first compilation,
  whether the cache is used. An unwritable folder turns the cache off with a warning.
  """
  import jax  # pylint: disable=g-import-not-at-top

  folder = cache_dir()
  if folder is None:
    return None
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    logging.getLogger(__name__).warning("compilation cache %s is not usable (%s); compiling "
                                        "without it", folder, e.strerror)
    return None
  if not os.access(folder, os.W_OK | os.X_OK):
    logging.getLogger(__name__).warning("compilation cache %s is not writable; compiling without "
                                        "it", folder)
    return None
  jax.config.update("jax_compilation_cache_dir", str(folder))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return folder
