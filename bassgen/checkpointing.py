"""Orbax checkpoints of a whole training run: train state, JSON metadata and the Grain iterator.

Each step directory holds three items: `state` (parameters, EMA, optimizer, step; sharded arrays,
multi-host safe), `meta` (JSON: the resolved config, metrics, latent statistics) and `data` (the
data iterator's position), so a resumed run continues exactly where it stopped. The `N` latest
checkpoints are kept, plus the one with the best validation loss.

Multi-process runs save and restore collectively (every process calls `save`/`restore`; each
writes its own shards of the state and its own iterator position), and a checkpoint restores on
another number of processes or devices: the state is resharded to the target's shardings, and the
data position is the same in every process.
"""
from __future__ import annotations

import json
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
  foreign_state = None
  if data_iterator is not None:
    import grain  # pylint: disable=g-import-not-at-top
    data_dir = manager.directory / str(step) / "data"
    saved = sorted(data_dir.glob("process_*-of-*.json"))
    if (data_dir / _data_file(jax.process_index(), jax.process_count())).exists() or not saved:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    else:
      foreign_state = saved[0]
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  if foreign_state is not None:
    # Saved by another number of processes. Every process saved the same state, the number of
    # global batches read (bassgen.data.pipeline), so any one of them resumes this process.
    data_iterator.set_state(json.loads(foreign_state.read_text()))
  if data_iterator is not None:
    _upgrade_data_position(data_iterator, int(restored["meta"].get("step", 0)))
  return restored["state"], restored["meta"]


def _upgrade_data_position(data_iterator: Any, step: int) -> None:
  """Checkpoints written before the pipeline batched per process (2026-12) counted the examples
  read, not the batches: a training iterator has read one batch per step."""
  state = data_iterator.get_state()
  position = state.get("next_index") if isinstance(state, dict) else None
  if isinstance(position, int) and step > 0 and position > step and position % step == 0:
    data_iterator.set_state(dict(state, next_index=step))


def _data_file(process_index: int, process_count: int) -> str:
  """The name Grain's checkpoint handler gives each process's iterator state."""
  return f"process_{process_index}-of-{process_count}.json"


# Fields of the `sample` section that say what one run reads and writes (configs/ldm.py, for
# `main.py --mode=sample`), not how the model samples: exports leave them out.
RUN_IO_FIELDS = ("mix", "style", "out", "checkpoint", "num_samples", "overwrite")


def model_config(config: dict) -> dict:
  """An exported model's config: `config` (a dict) without the run I/O fields of `sample`."""
  out = dict(config)
  if isinstance(out.get("sample"), dict):
    out["sample"] = {k: v for k, v in out["sample"].items() if k not in RUN_IO_FIELDS}
  return out


def save_params(directory: str | pathlib.Path, params: Any, meta: dict) -> None:
  """Writes an inference export: parameters only (e.g. EMA, as numpy arrays) and JSON metadata.

  In a multi-process run every process may call it; process 0 alone writes.
  """
  if jax.process_index() != 0:
    return
  directory = pathlib.Path(directory).absolute()
  directory.mkdir(parents=True, exist_ok=True)   # Orbax won't create it for a subset of processes
  alone = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
  with ocp.CheckpointManager(
      directory, item_names=("params", "meta"),
      options=ocp.CheckpointManagerOptions(create=False, max_to_keep=1,
                                           enable_async_checkpointing=False,
                                           multiprocessing_options=alone)) as mngr:
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
