"""Orbax checkpoints of a whole training run: train state, JSON metadata and the Grain iterator.

Each step directory holds three items: `state` (parameters, EMA, optimizer, step; sharded arrays,
multi-host safe), `meta` (JSON: the resolved config, metrics, latent statistics) and `data` (the
data iterator's position), so a resumed run continues exactly where it stopped. The `N` latest
checkpoints are kept, plus the one with the best validation loss.
"""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from bassgen.errors import BassgenError


def _best_metric(metrics: Any) -> float:
  # BestN keeps the largest values: rank by negative validation loss.
  return -float(metrics["val_loss"])


def make_manager(directory: str | pathlib.Path, *, keep: int = 3, with_data: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """A manager for `directory`/<step>/{state,meta,data}."""
  directory = pathlib.Path(directory).absolute()
  items = ("state", "meta", "data") if with_data else ("state", "meta")
  handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
  if with_data:
    import grain  # pylint: disable=g-import-not-at-top
    handlers["data"] = grain.checkpoint.CheckpointHandler()
  policy = pp.AnyPreservationPolicy([
      pp.LatestN(n=keep),
      pp.BestN(get_metric_fn=_best_metric, n=1, keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      create=not read_only, read_only=read_only, preservation_policy=policy,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, item_names=items, item_handlers=handlers,
                               options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict,
         data_iterator: Any = None, metrics: dict | None = None) -> None:
  args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
  if data_iterator is not None:
    import grain  # pylint: disable=g-import-not-at-top
    args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**args), metrics=metrics)
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, abstract_state: Any, data_iterator: Any = None,
            step: int | None = None) -> tuple[Any, dict]:
  """Restores (state, meta) into `abstract_state`'s shapes and shardings; the iterator in place."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise BassgenError(f"{manager.directory}: no checkpoint found. Train a model first or give "
                       "another --checkpoint/--workdir.")
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  args = {"state": ocp.args.StandardRestore(target), "meta": ocp.args.JsonRestore()}
  if data_iterator is not None:
    import grain  # pylint: disable=g-import-not-at-top
    args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  return restored["state"], restored["meta"]


def save_params(directory: str | pathlib.Path, params: Any, meta: dict) -> None:
  """Writes an inference export: parameters only (e.g. EMA) and JSON metadata."""
  directory = pathlib.Path(directory).absolute()
  with ocp.CheckpointManager(
      directory, item_names=("params", "meta"),
      options=ocp.CheckpointManagerOptions(create=True, max_to_keep=1,
                                           enable_async_checkpointing=False)) as mngr:
    mngr.save(0, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                         meta=ocp.args.JsonSave(meta)), force=True)
    mngr.wait_until_finished()


def _open_export(directory: str | pathlib.Path) -> tuple[ocp.CheckpointManager, int]:
  directory = pathlib.Path(directory).absolute()
  if not directory.is_dir():
    raise BassgenError(f"{directory}: no such checkpoint folder. Give the folder written by "
                       "training (or the bundled experiments/demo model).")
  mngr = ocp.CheckpointManager(directory, item_names=("params", "meta"),
                               options=ocp.CheckpointManagerOptions(read_only=True))
  step = mngr.latest_step()
  if step is None:
    mngr.close()
    raise BassgenError(f"{directory}: not a bassgen model export (no checkpoint inside).")
  return mngr, step


def load_meta(directory: str | pathlib.Path) -> dict:
  """The JSON metadata of an export written by `save_params` (config, statistics, kind)."""
  mngr, step = _open_export(directory)
  with mngr:
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def load_params(directory: str | pathlib.Path, abstract_params: Any) -> Any:
  """The parameters of an export, restored into `abstract_params`' tree structure and shapes."""
  mngr, step = _open_export(directory)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_params)
  with mngr:
    out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
  return out["params"]
