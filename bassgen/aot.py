"""Compiled programs kept on disk between `bassgen sample` processes.

JAX's persistent compilation cache (`compile_cache.py`) spares a second process the compiling, but
not the tracing and lowering it needs to look a program up: about 1 s for the demo's sampler on a
2-core CPU. A `ProgramCache` keeps the compiled executable of `call(name, scope, jitted, *args)`
(`jax.experimental.serialize_executable`), so a second process neither traces, lowers nor
compiles it. It also keeps each model export's metadata and weights as plain arrays
(`load_export`), so that process reads no Orbax checkpoint and builds no model structure: with
every program and weight from here, `bassgen sample` never imports Flax, Optax or Orbax (about
0.7 s of imports, 0.5 s of restoring and 0.6 s of shape-only model builds saved per process).
Model structures themselves are not stored (a graphdef could only be stored as a pickle); they
are built only when a program is traced.

An entry's key holds everything it depends on: bassgen's own source, the versions of JAX, jaxlib
and Flax, the devices, the model config (`scope`), and each argument's shape, dtype and sharding.
Editing bassgen or upgrading JAX therefore misses the cache instead of running a stale program.
A program entry is a JSON header (the result's tree structure as a PyTreeDef proto, the device
ids; the arguments' structure comes from the call itself) and the executable's bytes; an export
entry is a JSON header (the metadata, each weight's key path, dtype, shape and offset) and the
weights' bytes, one per export folder, used while the export's files are unchanged
(`export_digest`) and replaced when a retrained export misses. Nothing
in an entry is unpickled by this module. JAX's own
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
import importlib.metadata
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
  import jaxlib  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  # Flax's version from its metadata: importing Flax costs 0.5 s, which a cache hit avoids.
  return json.dumps([source_digest(), jax.__version__, jaxlib.__version__,
                     importlib.metadata.version("flax"),
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


def export_digest(directory: str | pathlib.Path) -> str:
  """A digest of a checkpoint export's files (relative path, size, modification time): it changes
  whenever the export is rewritten."""
  root = pathlib.Path(directory)
  rows = []
  for dirpath, _, names in os.walk(root):
    for name in names:
      st = os.stat(os.path.join(dirpath, name))
      rows.append([os.path.relpath(os.path.join(dirpath, name), root), st.st_size, st.st_mtime_ns])
  return hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest()


def _flatten_dict(tree: Any, prefix: tuple = ()) -> list[tuple[list, np.ndarray]]:
  """(key path, array) of every leaf of nested dicts (string or int keys), in sorted key order."""
  if isinstance(tree, dict):
    out = []
    for k in sorted(tree, key=lambda k: (isinstance(k, str), k)):
      out += _flatten_dict(tree[k], prefix + (k,))
    return out
  return [(list(prefix), np.asarray(tree))]


def _unflatten_dict(leaves: list[tuple[list, Any]]) -> dict:
  root: dict = {}
  for path, value in leaves:
    node = root
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  return root


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

  def load_export(self, directory: str | pathlib.Path,
                  restore: Callable[[], tuple[dict, Any]]) -> tuple[dict, Any]:
    """(metadata, parameters) of the model export in `directory`: from this cache while the
    export's files are unchanged (`export_digest`), else `restore()` (which reads the export:
    Orbax, the model's shape-only build) and stored for the next process. The parameters are
    nested dicts (string or int keys) of numpy arrays, as `nnx.to_pure_dict` gives them; the
    metadata must be JSON."""
    directory = pathlib.Path(directory).resolve()
    path = self._path("export", str(directory))   # one entry per export folder, replaced when
    digest = export_digest(directory)              # the export's files change
    stored = self._read(path)
    if stored is not None and stored[0].get("digest") == digest:
      try:
        header, payload = stored
        leaves = [(leaf["path"], np.frombuffer(payload, jax.numpy.dtype(leaf["dtype"]),
                                               int(np.prod(leaf["shape"])), leaf["offset"]
                                               ).reshape(leaf["shape"]))
                  for leaf in header["leaves"]]
        self.loaded += 1
        return header["meta"], _unflatten_dict(leaves)
      except (KeyError, TypeError, ValueError) as e:
        _log.warning("ignoring unreadable cache entry %s (%s); rebuilding it", path, e)
    meta, params = restore()
    leaves, offset, chunks = [], 0, []
    for key_path, value in _flatten_dict(params):
      data = np.ascontiguousarray(value).tobytes()
      leaves.append({"path": key_path, "dtype": value.dtype.name, "shape": list(value.shape),
                     "offset": offset})
      chunks.append(data)
      offset += len(data)
    try:
      header = {"digest": digest, "meta": meta, "leaves": leaves}
      json.dumps(header)
    except TypeError as e:   # metadata that JSON cannot hold: not cached
      _log.debug("not caching %s (%s)", directory, e)
    else:
      self._write(path, header, b"".join(chunks))
    self.built += 1
    return meta, params

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
