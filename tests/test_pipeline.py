"""Grain pipeline: the mixing rule, silence rejection, exact resume, per-process sharding."""
import itertools

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags

from bassgen.data import pipeline
from bassgen.data import prepare
from bassgen.errors import BassgenError
from test_sources import SR, tone, write_folder_tree, write_wav

CROP = 3000  # samples: longer than a segment (1000), so crops span several records
GAINS_DB = (-9.0, 3.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """Three tracks with 2, 1 and 3 accompaniment stems; song03 is shorter than a crop."""
  root = tmp_path_factory.mktemp("root")
  truth = write_folder_tree(root, (("drums", "keys"), ("guitar",), ("drums", "pad", "organ")),
                            seconds=1.5)
  short_root = tmp_path_factory.mktemp("short")
  truth["song03"] = write_folder_tree(short_root, (("drums",),), seconds=0.2)["song00"]
  (short_root / "song00").rename(root / "song03")
  out = tmp_path_factory.mktemp("prepared")
  index = prepare.prepare("folder", root, out, sample_rate=SR, segment_seconds=0.125, workers=1,
                          log=lambda _: None)
  assert index["num_tracks"] == 4
  return out, index, truth


def _batches(ds, n):
  return list(itertools.islice(iter(ds), n))


def _train(out, **kw):
  kw = {"crop_samples": CROP, "batch_size": 4, "seed": 7, "shard_index": 0, "shard_count": 1,
        "with_metadata": True, **kw}
  return pipeline.make_train_dataset(out, **kw)


def _assert_same(a_batches, b_batches):
  assert len(a_batches) == len(b_batches)
  for a, b in zip(a_batches, b_batches):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def _source_crop(truth, index, track, start):
  """{stem: crop} cut from the original fixture audio, zero-padded past the track end."""
  entry = index["tracks"][track]
  audio = truth[entry["name"]]
  crop = {}
  for stem in entry["stems"]:
    wav = audio[stem][start:start + CROP]
    crop[stem] = np.pad(wav, (0, CROP - wav.size))
  return entry, crop


def test_mix_is_the_sum_of_chosen_stems_times_gains_and_target_is_same_crop(data):
  out, index, truth = data
  (batch,) = _batches(_train(out, batch_size=64), 1)
  assert batch["mix"].shape == batch["target"].shape == (64, CROP)
  assert batch["mix"].dtype == batch["target"].dtype == np.float32
  subset_sizes = set()
  for i in range(64):
    entry, crop = _source_crop(truth, index, batch["track"][i], batch["start"][i])
    others = entry["stems"][1:]
    gains = batch["gains"][i]
    assert np.all(gains[len(others):] == 0)  # padding beyond this track's stems
    chosen = gains[:len(others)] > 0
    assert 1 <= chosen.sum() <= len(others)
    gains_db = 20 * np.log10(gains[:len(others)][chosen])
    assert np.all((gains_db >= GAINS_DB[0] - 1e-4) & (gains_db <= GAINS_DB[1] + 1e-4))
    want_mix = sum(g * crop[s] for g, s in zip(gains, others))
    np.testing.assert_allclose(batch["mix"][i], want_mix, atol=1e-3)
    np.testing.assert_allclose(batch["target"][i], crop["bass"], atol=1e-4)
    subset_sizes.add((len(others), int(chosen.sum())))
  # Over 64 examples, both partial and full subsets of the 3-stem track occur.
  assert {(3, 1), (3, 3)} <= subset_sizes


def test_mix_stems_rule():
  stems = np.stack([tone(i, 0.1) for i in range(5)])
  rng = np.random.default_rng(0)
  sizes = set()
  for _ in range(200):
    mix, gains = pipeline.mix_stems(stems, rng, (-6.0, 0.0))
    np.testing.assert_allclose(mix, gains @ stems, rtol=1e-6, atol=1e-6)
    used = gains[gains > 0]
    assert np.all((used >= 10 ** (-6 / 20) - 1e-6) & (used <= 1 + 1e-6))
    sizes.add(int((gains > 0).sum()))
  assert sizes == {1, 2, 3, 4, 5}


def test_crop_starts_in_its_segment_and_short_tracks_are_zero_padded(data):
  out, index, _ = data
  batches = _batches(_train(out, batch_size=16), 4)
  seg = index["segment_samples"]
  first = np.cumsum([0] + [t["num_segments"] for t in index["tracks"]])
  seen_short = False
  for b in batches:
    for e, t, s, tgt in zip(b["element"], b["track"], b["start"], b["target"]):
      n = index["tracks"][t]["num_samples"]
      assert first[t] <= e < first[t + 1]
      segment_start = (e - first[t]) * seg
      if segment_start <= n - CROP:
        assert segment_start <= s < segment_start + seg
      assert 0 <= s <= max(n - CROP, 0)
      if n < CROP:
        seen_short = True
        assert np.all(tgt[n:] == 0) and np.any(tgt[:n] != 0)
  assert seen_short


def test_same_seed_same_batches_other_seed_other_batches(data):
  out, _, _ = data
  _assert_same(_batches(_train(out), 5), _batches(_train(out), 5))
  other = _batches(_train(out, seed=8), 5)
  assert not np.array_equal(other[0]["mix"], _batches(_train(out), 1)[0]["mix"])


def test_iterator_state_resumes_exactly(data):
  out, _, _ = data
  it = iter(_train(out))
  for _ in range(7):  # 28 examples: past the first epoch (38 segments) comes next
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(6)]
  fresh = iter(_train(out))
  fresh.set_state(state)
  _assert_same([next(fresh) for _ in range(6)], expected)


def test_iterator_restores_exactly_from_an_orbax_checkpoint(data, tmp_path):
  out, _, _ = data
  it = iter(_train(out))
  for _ in range(3):
    next(it)
  mngr = ocp.CheckpointManager(tmp_path / "ckpt",
                               options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
  mngr.save(3, args=ocp.args.Composite(meta=ocp.args.JsonSave({"step": 3}),
                                       data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  expected = [next(it) for _ in range(4)]

  fresh = iter(_train(out))
  restored = mngr.restore(3, args=ocp.args.Composite(
      meta=ocp.args.JsonRestore(), data=grain.checkpoint.CheckpointRestore(fresh)))
  assert restored["meta"] == {"step": 3}
  _assert_same([next(fresh) for _ in range(4)], expected)
  mngr.close()


def test_two_processes_see_disjoint_examples(data):
  out, index, _ = data
  n = sum(t["num_segments"] for t in index["tracks"])
  epoch = {}
  for shard in (0, 1):
    size = len(range(shard, n, 2))
    ds = _train(out, batch_size=1, shard_index=shard, shard_count=2)
    epoch[shard] = [int(b["element"][0]) for b in _batches(ds, size)]
    assert len(set(epoch[shard])) == size  # one epoch: every element of the shard once
  assert not set(epoch[0]) & set(epoch[1])
  assert set(epoch[0]) | set(epoch[1]) == set(range(n))
  # Not the same random stream either: the two shards' gains differ at the same step.
  g0 = _batches(_train(out, shard_index=0, shard_count=2), 1)[0]["gains"]
  g1 = _batches(_train(out, shard_index=1, shard_count=2), 1)[0]["gains"]
  assert not np.array_equal(g0, g1)


def test_default_shard_is_the_jax_process(data):
  out, _, _ = data
  a = _batches(_train(out, shard_index=None, shard_count=None), 2)
  _assert_same(a, _batches(_train(out, shard_index=0, shard_count=1), 2))


def test_silent_crops_are_rejected(tmp_path):
  root = tmp_path / "root"
  sil = np.zeros(int(1.5 * SR), np.float32)
  loud = tone(3, 1.5)
  half = np.concatenate([sil[: SR], loud[SR:]])  # bass silent for the first second
  write_wav(root / "half" / "bass.wav", half)
  write_wav(root / "half" / "drums.wav", tone(4, 1.5))
  write_wav(root / "silent" / "bass.wav", sil)
  write_wav(root / "silent" / "drums.wav", tone(5, 1.5))
  out = tmp_path / "out"
  prepare.prepare("folder", root, out, sample_rate=SR, segment_seconds=0.125, workers=1,
                  log=lambda _: None)
  crop = 2000

  def levels(threshold):
    ds = pipeline.make_train_dataset(out, crop_samples=crop, batch_size=8, seed=0,
                                     silence_threshold_db=threshold, shard_index=0, shard_count=1,
                                     with_metadata=True, max_crop_tries=40)
    res = {0: [], 1: []}
    for b in _batches(ds, 6):
      for t, tgt in zip(b["track"], b["target"]):
        res[int(t)].append(pipeline.rms_db(tgt))
    return res

  # 60% of the crops of 'half' are silent: 40 tries all fail with probability 0.6**40 ~ 1e-9.
  off, on = levels(None), levels(-30.0)
  assert min(off[0]) < -30.0  # without rejection, silent crops of 'half' occur
  assert min(on[0]) >= -30.0  # with it, none do
  assert len(on[1]) > 0 and max(on[1]) == pipeline.rms_db(np.zeros(1))  # silent track: no hang


def test_eval_dataset_is_finite_deterministic_and_sharded(data):
  out, _, _ = data
  kw = {"crop_samples": CROP, "batch_size": 2, "num_examples": 9, "with_metadata": True}
  ds = pipeline.make_eval_dataset(out, shard_index=0, shard_count=1, **kw)
  first, second = list(ds), list(ds)
  assert len(first) == 4  # 9 // 2: the remainder is dropped, every batch has a fixed shape
  _assert_same(first, second)
  halves = [list(pipeline.make_eval_dataset(out, shard_index=i, shard_count=2, **kw))
            for i in (0, 1)]
  assert [len(h) for h in halves] == [2, 2]
  starts = [{(int(t), int(s)) for b in h for t, s in zip(b["track"], b["start"])} for h in halves]
  assert not starts[0] & starts[1]
  with pytest.raises(BassgenError, match="num_examples"):
    pipeline.make_eval_dataset(out, shard_index=0, shard_count=5, **kw)  # 9 < 2 x 5


def test_missing_or_empty_prepared_folder_is_a_user_error(tmp_path):
  with pytest.raises(BassgenError, match="index.json: missing.*bassgen prepare"):
    pipeline.make_train_dataset(tmp_path, crop_samples=10, batch_size=1, seed=0)
  (tmp_path / "r" / "t").mkdir(parents=True)
  write_wav(tmp_path / "r" / "t" / "drums.wav", tone(0))
  prepare.prepare("folder", tmp_path / "r", tmp_path / "o", sample_rate=SR, workers=1,
                  log=lambda _: None)
  with pytest.raises(BassgenError, match="no prepared tracks"):
    pipeline.read_index(tmp_path / "o")


@pytest.mark.slow
def test_worker_processes_resume_exactly(data):
  out, _, _ = data
  if not flags.FLAGS.is_parsed():   # outside absl.app.run: a clear error, no hidden global change
    with pytest.raises(BassgenError, match="mark_as_parsed"):
      iter(_train(out, worker_count=2))
    flags.FLAGS.mark_as_parsed()    # what absl.app.run does; Grain's workers read the flags
  it = iter(_train(out, worker_count=2))
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  fresh = iter(_train(out, worker_count=2))
  fresh.set_state(state)
  _assert_same([next(fresh) for _ in range(3)], expected)
