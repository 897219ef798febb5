"""Per-process data sharding: each process reads only its rows of every global batch, the global
batch is the same for any number of processes, and an iterator state resumes on another process
count. Also the --distributed flags' user errors. (The real 2-process runs: test_distributed.py.)"""
import io
import itertools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bassgen import sharding
from bassgen.data import latents, pipeline, prepare
from bassgen.errors import BassgenError
from test_sources import SR, write_folder_tree

ROOT = pathlib.Path(__file__).parents[1]
CROP = 1500


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("shard_root")
  write_folder_tree(root, (("drums", "keys"), ("guitar",), ("drums", "pad")), seconds=1.0)
  out = tmp_path_factory.mktemp("shard_prepared")
  prepare.prepare("folder", root, out, sample_rate=SR, segment_seconds=0.125, workers=1,
                  log=lambda _: None)
  return out


def _take(it, n):
  return list(itertools.islice(it, n))


def _joined(per_process: list[list[dict]]) -> list[dict]:
  """Each step's rows of all processes in process order: the global batch they assemble."""
  return [{k: np.concatenate([b[k] for b in step]) for k in step[0]}
          for step in zip(*per_process)]


def _assert_same(a_batches, b_batches):
  assert len(a_batches) == len(b_batches)
  for a, b in zip(a_batches, b_batches):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _train(data, batch_size, shard_index, shard_count):
  return pipeline.make_train_dataset(data, crop_samples=CROP, batch_size=batch_size, seed=3,
                                     shard_index=shard_index, shard_count=shard_count,
                                     with_metadata=True)


@pytest.mark.parametrize("count", [2, 4])
def test_the_global_batch_does_not_depend_on_the_process_count(prepared, count):
  steps = 5   # more than one epoch: 24 segments, 8 examples a step
  one = _take(iter(_train(prepared, 8, 0, 1)), steps)
  parts = [_take(iter(_train(prepared, 8 // count, i, count)), steps) for i in range(count)]
  _assert_same(_joined(parts), one)
  for step in zip(*parts):   # within a step no two processes read the same example
    starts = [{(int(t), int(s)) for t, s in zip(b["track"], b["start"])} for b in step]
    assert sum(map(len, starts)) == len(set().union(*starts)) == 8


def test_an_iterator_state_resumes_on_another_process_count(prepared):
  its = [iter(_train(prepared, 2, i, 2)) for i in range(2)]
  for it in its:
    _take(it, 3)
  states = [it.get_state() for it in its]
  assert states[0] == states[1]   # the state is the number of global batches read
  want = _joined([_take(it, 2) for it in its])
  single = iter(_train(prepared, 4, 0, 1))
  single.set_state(json.loads(json.dumps(states[1])))   # as saved in a checkpoint
  _assert_same(_take(single, 2), want)


def test_eval_batches_do_not_depend_on_the_process_count(prepared):
  kw = {"crop_samples": CROP, "num_examples": 12, "with_metadata": True, "seed": 1}
  one = list(pipeline.make_eval_dataset(prepared, batch_size=4, shard_index=0, shard_count=1, **kw))
  parts = [list(pipeline.make_eval_dataset(prepared, batch_size=2, shard_index=i, shard_count=2,
                                           **kw)) for i in range(2)]
  assert len(one) == 3
  _assert_same(_joined(parts), one)


def _fake_latent_cache(directory: pathlib.Path, tracks=3, records=2, frames=40, channels=4):
  """A latent cache in the trainer's format with random latents (no autoencoder needed)."""
  from array_record.python import array_record_module
  rng = np.random.default_rng(0)
  entries = []
  (directory / "tracks").mkdir(parents=True)
  for t in range(tracks):
    path = directory / "tracks" / f"t{t}.array_record"
    writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
    for _ in range(records):
      buf = io.BytesIO()
      np.savez(buf, mix=rng.standard_normal((frames, channels)).astype(np.float16),
               target=rng.standard_normal((frames, channels)).astype(np.float16),
               level=np.zeros(frames, np.float32))
      writer.write(buf.getvalue())
    writer.close()
    entries.append({"name": f"t{t}", "file": f"tracks/{path.name}", "num_frames": frames,
                    "num_records": records})
  (directory / latents.INDEX_NAME).write_text(json.dumps(
      {"format": "bassgen-latents", "tracks": entries, "latent_channels": channels}))
  return directory


def test_latent_batches_do_not_depend_on_the_process_count(tmp_path):
  cache = _fake_latent_cache(tmp_path / "lat")

  def train(b, i, n):
    return iter(latents.make_latent_train_dataset(cache, crop_frames=8, batch_size=b, seed=2,
                                                  shard_index=i, shard_count=n))

  one = _take(train(4, 0, 1), 4)
  parts = [_take(train(2, i, 2), 4) for i in range(2)]
  _assert_same(_joined(parts), one)
  # Resume: process 1's state after 2 global batches continues a single-process iterator.
  it = train(2, 1, 2)
  _take(it, 2)
  single = train(4, 0, 1)
  single.set_state(it.get_state())
  _assert_same(_take(single, 2), one[2:])


def test_process_batch_size_and_distributed_flags_are_checked():
  assert sharding.process_batch_size(8) == 8   # one process here
  with pytest.raises(BassgenError, match="--coordinator, --num-processes and --process-id go together"):
    sharding.initialize_distributed("127.0.0.1:1", None, 0)
  with pytest.raises(BassgenError, match="--process-id=2: must be in 0 .. 1"):
    sharding.initialize_distributed("127.0.0.1:1", 2, 2)


def test_main_rejects_process_flags_without_distributed(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("PYTEST_CURRENT_TEST", None)
  run = subprocess.run(
      [sys.executable, "-m", "bassgen.main", f"--config={ROOT / 'configs' / 'autoencoder.py'}:runlocal",
       f"--workdir={tmp_path / 'w'}", "--num-processes=2", "--process-id=0"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 1
  assert "error: --coordinator/--num-processes/--process-id need --distributed" in run.stderr
  assert "Traceback" not in run.stderr and not (tmp_path / "w").exists()
