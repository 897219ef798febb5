"""The program cache: compiled programs reused by a later process without
tracing or compiling again, keyed by what they depend on."""
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from bassgen import aot

TRACES = []


@jax.jit
def _affine(params, x, key):
  TRACES.append(x.shape)          # runs only while JAX traces the function
  return params["w"] * x + params["b"] + jax.random.normal(key, x.shape)


class _Scaled:
  """A jitted method with its object as a static argument, as the codec's chunk programs are."""

  def __init__(self, k):
    self.k = k

  @functools.partial(jax.jit, static_argnums=0)
  def apply(self, x):
    TRACES.append(("apply", self.k))
    return self.k * x


def _args(n=5):
  params = {"w": np.float32(2.0), "b": np.arange(n, dtype=np.float32)}
  return params, np.linspace(0, 1, n, dtype=np.float32), jax.random.key(0)


def test_a_later_process_runs_the_stored_program_without_tracing_it(tmp_path):
  TRACES.clear()
  first = aot.ProgramCache(tmp_path)
  want = np.asarray(_affine(*_args()))
  jax.clear_caches()
  TRACES.clear()
  got = first.call("affine", "scope", _affine, *_args())
  np.testing.assert_array_equal(np.asarray(got), want)
  assert first.built == 1 and TRACES == [(5,)]
  # A new cache object on the folder stands for the next process: it loads, does not trace.
  later = aot.ProgramCache(tmp_path)
  jax.clear_caches()
  TRACES.clear()
  np.testing.assert_array_equal(np.asarray(later.call("affine", "scope", _affine, *_args())),
                                want)
  assert (later.loaded, later.built, TRACES) == (1, 0, [])
  # Another shape, another scope (model config) or another name is another program.
  later.call("affine", "scope", _affine, *_args(7))
  later.call("affine", "other model", _affine, *_args())
  assert later.built == 2 and TRACES == [(7,), (5,)]


def test_static_arguments_and_unreadable_entries(tmp_path):
  TRACES.clear()
  x = np.ones(3, np.float32)
  cache = aot.ProgramCache(tmp_path)
  np.testing.assert_array_equal(cache.call("scaled", "k=3", _Scaled.apply, x,
                                           static=(_Scaled(3),)), 3 * x)
  for f in tmp_path.glob("program-*"):
    f.write_bytes(b"not a program")
  again = aot.ProgramCache(tmp_path)
  TRACES.clear()
  np.testing.assert_array_equal(again.call("scaled", "k=3", _Scaled.apply, x,
                                           static=(_Scaled(3),)), 3 * x)
  assert again.built == 1 and TRACES == [("apply", 3)]   # rebuilt, not crashed


class _Planted:
  """A pickle that runs code when loaded: what an attacker would put in someone's cache."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_an_entry_the_cache_did_not_write_is_never_loaded(tmp_path):
  import os
  import pickle
  x = np.ones(3, np.float32)
  folder, marker = tmp_path / "cache", tmp_path / "ran"
  run = lambda cache: cache.call("scaled", "k=3", _Scaled.apply, x, static=(_Scaled(3),))
  run(aot.ProgramCache(folder))
  (entry,) = folder.glob("program-*")
  for planted in (pickle.dumps(_Planted(marker)),                     # no tag at all
                  entry.read_bytes()[:32] + pickle.dumps(_Planted(marker))):   # a stolen tag
    entry.write_bytes(planted)
    cache = aot.ProgramCache(folder)
    np.testing.assert_array_equal(run(cache), 3 * x)
    assert not marker.exists() and (cache.loaded, cache.built) == (0, 1)   # rebuilt, not loaded
  # A folder another user could write to is not used at all.
  os.chmod(folder, 0o777)
  shared = aot.ProgramCache(folder)
  run(shared)
  assert shared.loaded == 0 and shared.built == 1


def test_the_key_follows_the_source():
  """Editing bassgen changes the digest every key starts from."""
  assert len(aot.source_digest()) == 64
  assert aot.signature((np.zeros((2, 3), np.float32),)) != aot.signature(
      (np.zeros((2, 4), np.float32),))


_PROCESS = """
import sys, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
from bassgen import aot
cache = aot.ProgramCache(sys.argv[2])
f = jax.jit(lambda x: jnp.pad(x, (3, 5)) * 2.0)
out = np.asarray(cache.call("pad", "s", f, np.arange(4, dtype=np.float32)))
assert out.tolist() == [0, 0, 0, 0, 2, 4, 6, 0, 0, 0, 0, 0], out
print("LOADED", cache.loaded, "BUILT", cache.built)
"""


def test_programs_answered_by_jax_persistent_cache_are_not_stored(tmp_path):
  """On a CPU an executable JAX loaded from its persistent cache serializes without its kernels
  and fails when a later process runs it: only programs XLA compiled in the process are stored."""
  import subprocess
  import sys

  def run(programs):
    done = subprocess.run([sys.executable, "-c", _PROCESS, str(tmp_path / "jax"),
                           str(tmp_path / programs)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()[-3:]

  assert run("a") == ["0", "BUILT", "1"]                              # compiled, stored
  assert len(list((tmp_path / "a").glob("program-*"))) == 1
  assert run("a") == ["1", "BUILT", "0"]                              # loaded, runs
  # A new program folder while JAX's cache is warm: compiled from that cache, not stored, so no
  # later process can load a broken copy.
  assert run("b") == ["0", "BUILT", "1"]
  assert not list((tmp_path / "b").glob("program-*"))
  assert run("b") == ["0", "BUILT", "1"]


def _export(folder: pathlib.Path, scale: float) -> pathlib.Path:
  """A stand-in for a model export: its files are what `export_digest` follows."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "weights").write_bytes(np.float32(scale).tobytes())
  return folder


def test_an_export_is_read_once_then_comes_from_the_cache_until_it_changes(tmp_path):
  export = _export(tmp_path / "export", 1.0)
  reads = []

  def restore():   # what Orbax and the shape-only build would do
    reads.append(1)
    scale = float(np.frombuffer((export / "weights").read_bytes(), np.float32)[0])
    return ({"kind": "ldm", "config": {"channels": [8, 16]}},
            {"conv": {"kernel": scale * np.arange(6, dtype=np.float32).reshape(2, 3),
                      "bias": np.zeros(3, jnp.bfloat16)},
             "blocks": {0: {"scale": np.full(4, scale, np.float32)}, 1: {"scale": np.ones(1)}}})

  meta, params = aot.ProgramCache(tmp_path / "c").load_export(export, restore)
  assert len(reads) == 1
  later = aot.ProgramCache(tmp_path / "c")           # the next process
  meta2, params2 = later.load_export(export, restore)
  assert len(reads) == 1 and later.loaded == 1       # not read again
  assert meta2 == meta
  assert jax.tree.structure(params2) == jax.tree.structure(params)   # int keys stay ints
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
  # The export is rewritten (a retrained model): the cache misses and reads the new weights.
  _export(export, 2.0)
  os_time = (export / "weights").stat().st_mtime_ns + 10**9
  import os
  os.utime(export / "weights", ns=(os_time, os_time))
  _, params3 = aot.ProgramCache(tmp_path / "c").load_export(export, restore)
  assert len(reads) == 2
  np.testing.assert_array_equal(params3["conv"]["kernel"], 2 * params["conv"]["kernel"])
  assert len(list((tmp_path / "c").glob("export-*"))) == 1   # replaced, not piled up
  # An entry altered by someone else is not used: the export is read again.
  for entry in (tmp_path / "c").glob("export-*"):
    data = bytearray(entry.read_bytes())
    data[-1] ^= 0xFF
    entry.write_bytes(bytes(data))
  aot.ProgramCache(tmp_path / "c").load_export(export, restore)
  assert len(reads) == 3
