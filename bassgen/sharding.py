"""Device mesh, parameter shardings from logical axis names, and global batches.

One `Mesh` with named axes (`data`, `fsdp`), sized by the config's `mesh.data` and `mesh.fsdp`
(-1: the devices the other axis leaves). Batches are split over both axes (data parallelism over
every device). Each parameter carries logical axis names (set where the layer is built) that one
table in the config (`mesh.rules`) maps to mesh axes: large weights are split over `fsdp` (fully
sharded data parallelism: each device holds 1/fsdp of the weights, the optimizer state and the
EMA), and weights under `mesh.min_shard_size` elements stay replicated, where splitting them would
cost more in communication than it saves in memory. The same code runs on 8 fake CPU devices, one
GPU, or a TPU pod slice with several hosts: each process builds its own rows of the global batch,
and `global_batch` assembles them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from bassgen.errors import BassgenError

if TYPE_CHECKING:
  import optax
  from flax import nnx

# Flax and Optax are imported by the three functions that use them (structure and optimizer
# shardings), not here: sampling with cached programs (bassgen.aot) needs neither, and they
# take about 0.5 s to import.

DATA = "data"
FSDP = "fsdp"
BATCH_AXES = (DATA, FSDP)   # a batch is split over every device of the mesh


def mesh_config(data: int = -1, fsdp: int = 1, min_shard_size: int = 2**14) -> Any:
  """The `mesh` section every training config starts from (override per variant or on the command
  line: `--config.mesh.fsdp=4`)."""
  m = ml_collections.ConfigDict()
  m.data = data                      # data-parallel axis size; -1 = the devices fsdp leaves
  m.fsdp = fsdp                      # parameter-sharding axis size; -1 = the devices data leaves
  m.min_shard_size = min_shard_size  # parameters with fewer elements stay replicated
  # Logical parameter axes (bassgen/models/layers.py) -> mesh axes: output channels over fsdp.
  m.rules = (("conv_in", None), ("conv_out", FSDP))
  return m


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """`jax.distributed.initialize()`: from the cluster's environment (TPU pods, SLURM, Open MPI...)
  when no argument is given, else from all three. CPU processes exchange data over gloo."""
  given = [v is not None for v in (coordinator, num_processes, process_id)]
  if any(given) and not all(given):
    raise BassgenError("--coordinator, --num-processes and --process-id go together: give all "
                       "three (or none, on a TPU pod or SLURM, where JAX reads them from the "
                       "environment).")
  if all(given) and not 0 <= process_id < num_processes:
    raise BassgenError(f"--process-id={process_id}: must be in 0 .. {num_processes - 1} "
                       f"(--num-processes={num_processes}).")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)


def process_batch_size(global_batch_size: int) -> int:
  """This process's share of a global batch (each process feeds its own rows)."""
  n = jax.process_count()
  if global_batch_size % n:
    raise BassgenError(f"train.batch_size={global_batch_size} cannot be split over {n} processes: "
                       "make it a multiple of the number of processes.")
  return global_batch_size // n


def to_host(tree: Any) -> Any:
  """A numpy copy of a tree of (global) arrays on every process, also where they span processes."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array (all of them in a single process)."""
  if x.is_fully_addressable:
    return np.asarray(x)
  shards = {s.index[0].start or 0: s.data for s in x.addressable_shards}
  return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])


def mesh_from_config(mesh_cfg: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The (data, fsdp) mesh a config's `mesh` section asks for, over all devices by default."""
  return make_mesh((int(mesh_cfg.data), int(mesh_cfg.fsdp)), devices=devices)


def make_mesh(mesh_shape: Sequence[int], axis_names: Sequence[str] = (DATA, FSDP),
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (all by default). One `-1` entry takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = list(mesh_shape)
  if shape.count(-1) > 1:
    raise ValueError("at most one mesh dimension may be -1")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise BassgenError(
        f"mesh {dict(zip(axis_names, mesh_shape))} does not fit the {len(devices)} devices: make "
        f"the sizes multiply to {len(devices)} (or set one of them to -1, e.g. "
        "--config.mesh.data=-1).")
  dev = np.asarray(devices).reshape(shape)
  return Mesh(dev, tuple(axis_names), axis_types=(AxisType.Auto,) * len(shape))


def logical_to_mesh_spec(spec: P, rules: Sequence[tuple[str, str | None]]) -> P:
  table = dict(rules)
  return P(*[table.get(name) if name is not None else None for name in spec])


def _fit(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """Drops a mesh axis from a dimension it does not divide (replicates that dimension instead)."""
  out = []
  for dim, name in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    size = 1 if name is None else mesh.shape[name]
    out.append(name if name is not None and dim % size == 0 else None)
  return P(*out)


def param_spec(logical: P, shape: Sequence[int], mesh: Mesh,
               rules: Sequence[tuple[str, str | None]], min_shard_size: int = 0) -> P:
  """A parameter's mesh PartitionSpec: its logical axes mapped by `rules`, each mesh axis kept only
  where it divides the dimension; replicated if it has fewer than `min_shard_size` elements."""
  if int(np.prod(shape)) < min_shard_size:
    return P()
  return _fit(logical_to_mesh_spec(logical, rules), shape, mesh)


def logical_specs(param_state: nnx.State) -> Any:
  """The logical axis names (a PartitionSpec per leaf, as a pure dict) of an NNX parameter state."""
  from flax import nnx  # pylint: disable=g-import-not-at-top,redefined-outer-name
  return nnx.to_pure_dict(nnx.get_partition_spec(param_state))


def shardings_from_specs(logical: Any, params: Any, mesh: Mesh,
                         rules: Sequence[tuple[str, str | None]], min_shard_size: int = 0) -> Any:
  """NamedShardings for a pure-dict parameter tree (arrays or shapes), from its logical specs."""
  return jax.tree.map(
      lambda spec, p: NamedSharding(mesh, param_spec(spec, p.shape, mesh, rules, min_shard_size)),
      logical, params, is_leaf=lambda x: isinstance(x, P))


def param_shardings(abstract_model: nnx.Module, params_abstract: Any, mesh: Mesh,
                    rules: Sequence[tuple[str, str | None]], min_shard_size: int = 0) -> Any:
  """NamedShardings for a pure-dict parameter tree, from the layers' logical axis names."""
  from flax import nnx  # pylint: disable=g-import-not-at-top,redefined-outer-name
  return shardings_from_specs(logical_specs(nnx.state(abstract_model, nnx.Param)),
                              params_abstract, mesh, rules, min_shard_size)


def optimizer_shardings(tx: optax.GradientTransformation, opt_state_abstract: Any,
                        params_sharding: Any, mesh: Mesh) -> Any:
  """Optimizer moments follow their parameters; everything else is replicated."""
  import optax  # pylint: disable=g-import-not-at-top,redefined-outer-name
  replicated = NamedSharding(mesh, P())
  return optax.tree_map_params(
      tx, lambda _, s: s, opt_state_abstract, params_sharding,
      transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, NamedSharding))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) axis split over every device: data x fsdp."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def check_batch(global_batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
  """A clear error where a global batch cannot be split evenly over the mesh's devices."""
  n = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
  if global_batch_size % n:
    raise BassgenError(f"{what}={global_batch_size} cannot be split over the {n} devices of mesh "
                       f"{dict(mesh.shape)}: make it a multiple of {n}.")


def batch_or_replicated(mesh: Mesh, x: Any) -> NamedSharding:
  """Batch-split over the mesh where the leading axis divides over its devices, else replicated
  (a sampling batch of one song, say)."""
  n = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
  x = np.asarray(x) if not hasattr(x, "shape") else x
  if x.ndim and x.shape[0] % n == 0:
    return batch_sharding(mesh, x.ndim)
  return replicated(mesh)


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's slice of the batch into one global array split over the mesh."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
          for k, v in local_batch.items()}


def describe(mesh: Mesh) -> str:
  kinds = sorted({d.device_kind for d in mesh.devices.flat})
  return (f"{jax.process_count()} process(es), {mesh.devices.size} device(s) [{', '.join(kinds)}], "
          f"mesh {dict(mesh.shape)}")
