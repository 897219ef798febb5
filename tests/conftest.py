"""Test setup: 8 fake CPU devices, before JAX is first used; BASSGEN_REQUIRE_EXTRAS (set by CI)
turns a missing optional dependency into an error instead of skipped tests."""
import os
import shutil
import tempfile

# Each pytest process (each worker of `pytest -n 2`, as `make test` runs) compiles librosa's numba
# functions into a cache of its own: two processes compiling into one cache at once can corrupt it
# (the segfault that bassgen/numba_cache.py guards the CLI against). Set before numba is imported.
_NUMBA_ROOT = "BASSGEN_TEST_NUMBA_ROOT"
_OWN_ROOT = _NUMBA_ROOT not in os.environ   # the first pytest process of this run: it cleans up
os.environ.setdefault(_NUMBA_ROOT, tempfile.mkdtemp(prefix="bassgen-test-numba-"))
os.environ["NUMBA_CACHE_DIR"] = os.path.join(os.environ[_NUMBA_ROOT],
                                             os.environ.get("PYTEST_XDIST_WORKER", "main"))
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CLI's persistent compilation cache stays out of the user's cache folder during tests (the
# tests that check it give it a folder of their own).
os.environ.setdefault("BASSGEN_JAX_CACHE_DIR", "off")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


def _missing_extras(names: list[str]) -> list[str]:
  """The names in BASSGEN_REQUIRE_EXTRAS (tfds, eval, notebooks, chromium) that this environment
  lacks."""
  import importlib.util
  import shutil

  have = {
      "tfds": lambda: importlib.util.find_spec("tensorflow_datasets") is not None,
      "eval": lambda: all(importlib.util.find_spec(m) is not None for m in ("swift_f0", "onnxruntime")),
      "notebooks": lambda: all(importlib.util.find_spec(m) is not None
                               for m in ("nbclient", "nbformat", "ipykernel")),
      "chromium": lambda: any(shutil.which(b) for b in ("chromium", "chromium-browser",
                                                        "google-chrome", "google-chrome-stable", "chrome")),
  }
  unknown = [n for n in names if n not in have]
  if unknown:
    raise pytest.UsageError(f"BASSGEN_REQUIRE_EXTRAS: unknown {', '.join(unknown)} "
                            f"(known: {', '.join(have)})")
  return [n for n in names if not have[n]()]


def pytest_configure(config):
  """CI sets BASSGEN_REQUIRE_EXTRAS=tfds,eval,notebooks,chromium: the tests that need them must
  run, so a missing one stops the run instead of turning into skips."""
  del config
  names = [n.strip() for n in os.environ.get("BASSGEN_REQUIRE_EXTRAS", "").split(",") if n.strip()]
  missing = _missing_extras(names)
  if missing:
    raise pytest.UsageError(
        f"BASSGEN_REQUIRE_EXTRAS asks for {', '.join(missing)}, which is not installed: their tests "
        "would be skipped. Install with `make test EXTRAS=dev,tfds,eval,notebooks` (chromium: "
        "apt-get install chromium), or unset BASSGEN_REQUIRE_EXTRAS.")


def pytest_unconfigure(config):
  del config
  if _OWN_ROOT and "PYTEST_XDIST_WORKER" not in os.environ:
    shutil.rmtree(os.environ[_NUMBA_ROOT], ignore_errors=True)
