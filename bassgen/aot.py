"""Compiled programs kept on disk between `bassgen sample` processes.

JAX's persistent compilation cache (`compile_cache.py`) spares a second process the compiling, but
not the tracing and lowering it needs to look a program up: about 1 s for the demo's sampler on a
2-core CPU. A `ProgramCache` keeps the compiled executable of `call(name, scope, jitted, *args)`
(`jax.experimental.serialize_executable`), so a second process neither traces, lowers nor
compiles it. (Model structures are not cached: `nnx.eval_shape` builds them in ~0.2-0.5 s, and a
graphdef could only be stored as a pickle.)

An entry's key holds everything it depends on: bassgen's own source, the versions of JAX, jaxlib
and Flax, the devices, the model config (`scope`), and each argument's shape, dtype and sharding.
Editing bassgen or upgrading JAX therefore misses the cache instead of running a stale program.
An entry is a JSON header (the result's tree structure as a PyTreeDef proto, the device ids;
the arguments' structure comes from the call itself) and the executable's bytes; nothing in it is unpickled by this module. JAX's own
`deserialize_and_load` still unpickles the executable's bytes, so no entry reaches it unless it
carries an HMAC-SHA256 tag made with this cache's own secret key (a file readable by its owner
only, in a folder only its owner can write): an entry someone else planted or altered is rebuilt,
never loaded. Entries are written atomically; an unreadable one is rebuilt. Only programs XLA
compiled in this process are stored: on a CPU, an executable that JAX's persistent cache answered
serializes without its compiled kernels, so such a program stays with JAX's cache (traced, then
looked up). Single-device programs only (the sampler on a mesh of several devices traces and
compiles as usual). The folder is a cache: delete it whenever you like.
"""
from __future__ import annotations

import functools
import base64
import hashlib
import hmac
import json
import logging
import os
import pathlib
import secrets
import stat
import tempfile
from typing import Any, Callable

import jax
import numpy as np

_log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
  """A digest of every Python file of the installed bassgen package."""
  root = pathlib.Path(__file__).parent
  h = hashlib.sha256()
  for f in sorted(root.rglob("*.py")):
    h.update(str(f.relative_to(root)).encode())
    h.update(f.read_bytes())
  return h.hexdigest()


def _environment() -> str:
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  return json.dumps([source_digest(), jax.__version__, jaxlib.__version__, flax.__version__,
                     jax.default_backend(), len(devices), devices[0].device_kind])


_HITS = [0]


@functools.lru_cache(maxsize=1)
def _count_persistent_cache_hits() -> None:
  def on_event(event: str, **_: Any) -> None:
    if event == "/jax/compilation_cache/cache_hits":
      _HITS[0] += 1
  jax.monitoring.register_event_listener(on_event)


def _persistent_cache_hits() -> int:
  """How many compilations JAX's persistent cache has answered in this process so far."""
  _count_persistent_cache_hits()
  return _HITS[0]


def _leaf_signature(x: Any) -> str:
  if isinstance(x, (bool, int, float, complex)):
    return type(x).__name__
  if isinstance(x, jax.Array):
    return f"{x.shape}{x.dtype}{getattr(x, 'weak_type', False)}{x.sharding}"
  a = np.asarray(x)
  return f"{a.shape}{a.dtype}"


def signature(args: tuple) -> str:
  """What a compiled program depends on in its arguments: the tree, shapes, dtypes, shardings."""
  leaves, treedef = jax.tree.flatten(args)
  return json.dumps([str(treedef)] + [_leaf_signature(x) for x in leaves])


def config_scope(config: Any) -> str:
  """A stable digest of a (ConfigDict or dict) model config, for `call`'s `scope`."""
  as_dict = config.to_dict() if hasattr(config, "to_dict") else config
  return hashlib.sha256(json.dumps(as_dict, sort_keys=True, default=str).encode()).hexdigest()


def _in_tree(args: tuple) -> Any:
  """The argument structure of a compiled program called with `args` (no keyword arguments): it
  is rebuilt from the call's own arguments, not stored (their pytrees may hold model state nodes
  that only a pickle could store)."""
  return jax.tree.structure((tuple(args), {}))


class ProgramCache:
  """Compiled programs in `folder` (see the module docstring).

  `loaded` and `built` count the entries this process read from disk and made itself.
  """

  def __init__(self, folder: str | pathlib.Path):
    self.folder = pathlib.Path(folder)
    self._env = _environment()
    self._programs: dict[str, Any] = {}
    self.loaded = 0
    self.built = 0
    self._secret: bytes | None = None
    self._usable = True

  def _key(self) -> bytes | None:
    """This cache's secret (made on first use), or None when the folder or key file could be
    written by another user (then nothing is read or written)."""
    if self._secret is not None or not self._usable:
      return self._secret
    try:
      self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
      path = self.folder / ".key"
      try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
          f.write(secrets.token_bytes(32))
      except FileExistsError:
        pass
      for item in (self.folder, path):
        st = os.stat(item)
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or (
            item == path and st.st_mode & (stat.S_IRGRP | stat.S_IROTH)):
          raise PermissionError(f"{item} is not private to this user")
      self._secret = path.read_bytes()
    except OSError as e:
      _log.warning("not using the program cache in %s (%s)", self.folder, e)
      self._usable = False
    return self._secret

  def _path(self, prefix: str, *parts: str) -> pathlib.Path:
    key = hashlib.sha256(json.dumps([self._env, *parts]).encode()).hexdigest()[:40]
    return self.folder / f"{prefix}-{key}.bin"

  def _read(self, path: pathlib.Path) -> tuple[dict, bytes] | None:
    """(header, payload) of an entry this cache wrote, else None."""
    key = self._key()
    if key is None:
      return None
    try:
      data = path.read_bytes()
    except FileNotFoundError:
      return None
    tag, body = data[:32], data[32:]
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest()):
      _log.warning("ignoring cache entry %s: it was not written by this cache; rebuilding it", path)
      return None
    try:
      size = int.from_bytes(body[:4], "big")
      return json.loads(body[4: 4 + size]), body[4 + size:]
    except ValueError as e:
      _log.warning("ignoring unreadable cache entry %s (%s); rebuilding it", path, e)
      return None

  def _write(self, path: pathlib.Path, header: dict, payload: bytes) -> None:
    key = self._key()
    if key is None:
      return
    try:
      head = json.dumps(header).encode()
      body = len(head).to_bytes(4, "big") + head + payload
      fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".bin")
      try:
        with os.fdopen(fd, "wb") as f:
          f.write(hmac.new(key, body, hashlib.sha256).digest() + body)
        os.replace(tmp, path)
      finally:
        if os.path.exists(tmp):
          os.unlink(tmp)
    except OSError as e:
      _log.warning("could not cache %s (%s); the next process builds it again", path.name, e)

  def call(self, name: str, scope: str, jitted: Any, *args: Any, static: tuple = ()) -> Any:
    """`jitted(*static, *args)`, run by the cached executable for these arguments.

    `name` and `scope` (e.g. `config_scope(model config)`) must identify everything the program
    closes over; `static` are `jitted`'s static arguments (part of `scope`, not of the key).
    """
    key = json.dumps([name, scope, signature(args)])
    program = self._programs.get(key)
    if program is None:
      program = self._load_program(key, args) or self._compile(key, jitted, static, args)
      self._programs[key] = program
    return program(*args)

  def _load_program(self, key: str, args: tuple) -> Any:
    from jax.experimental import serialize_executable  # pylint: disable=g-import-not-at-top
    stored = self._read(self._path("program", key))
    if stored is None:
      return None
    try:
      header, payload = stored
      in_tree = _in_tree(args)   # the key holds the arguments' structure
      out_tree = jax.tree_util.PyTreeDef.deserialize_using_proto(
          jax.tree_util.default_registry, base64.b64decode(header["out_tree"]))
      by_id = {d.id: d for d in jax.devices()}
      program = serialize_executable.deserialize_and_load(
          payload, in_tree, out_tree, execution_devices=[by_id[i] for i in header["devices"]])
    except Exception as e:  # pylint: disable=broad-except
      _log.warning("ignoring a cached program that does not load (%s); compiling it", e)
      return None
    self.loaded += 1
    return program

  def _compile(self, key: str, jitted: Any, static: tuple, args: tuple) -> Any:
    from jax.experimental import serialize_executable  # pylint: disable=g-import-not-at-top
    hits = _persistent_cache_hits()
    program = jitted.lower(*static, *args).compile()
    self.built += 1
    if _persistent_cache_hits() > hits:
      # JAX's persistent cache answered. On a CPU, an executable loaded from it serializes
      # without its compiled kernels ("Function ... not found" when run in a later process), so
      # only programs XLA compiled here are stored; this one stays in JAX's cache.
      _log.debug("%s came from JAX's persistent cache; not stored", key)
      return program
    # The devices it runs on (the arguments' devices), to run it on the same ones when loaded.
    device_ids = sorted({d.id for s in jax.tree.leaves(program.input_shardings)
                         for d in s.device_set})
    try:
      payload, in_tree, out_tree = serialize_executable.serialize(program)
      if in_tree != _in_tree(args):
        raise ValueError("the program's argument structure is not its arguments'")
      header = {"out_tree": base64.b64encode(out_tree.serialize_using_proto()).decode(),
                "devices": device_ids}
    except (ValueError, NotImplementedError, TypeError) as e:
      _log.warning("this backend cannot store compiled programs (%s)", e)
    else:
      self._write(self._path("program", key), header, payload)
    return program
