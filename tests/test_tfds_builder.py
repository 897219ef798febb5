"""Optional TFDS builder: writes array_record, reads back through tfds.data_source, without TF."""
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from bassgen.data import tfds_builder  # noqa: E402
from bassgen.errors import BassgenError  # noqa: E402
from test_sources import (SR, mono, tone, write_folder_tree, write_musdb_tree,  # noqa: E402
                          write_slakh_tree, write_wav)


def _by_track(source):
  """{track: (target, stems, names)} stitched from the segments of a data source."""
  parts = {}
  for i in range(len(source)):
    ex = source[i]
    parts.setdefault(ex["track"].decode(), []).append(ex)
  out = {}
  for name, exs in parts.items():
    exs.sort(key=lambda e: e["segment"])
    assert [e["start"] for e in exs] == sorted(e["start"] for e in exs)
    out[name] = (np.concatenate([e["target"] for e in exs]),
                 np.concatenate([e["stems"] for e in exs], axis=1),
                 [n.decode() for n in exs[0]["stem_names"]])
  return out


def test_folder_layout_builds_array_record_readable_without_tensorflow(tmp_path):
  truth = write_folder_tree(tmp_path / "root", (("drums", "keys"), ("guitar",)), seconds=1.0)
  write_wav(tmp_path / "root" / "broken" / "bass.wav", tone(1))
  (tmp_path / "root" / "broken" / "drums.wav").write_text("not audio")
  builder = tfds_builder.make_builder("folder", tmp_path / "root", data_dir=tmp_path / "tfds",
                                      sample_rate=SR, segment_seconds=0.4)
  builder.download_and_prepare()
  files = [p.name for p in (tmp_path / "tfds").rglob("*array_record*")]
  assert files and all("array_record" in f for f in files)

  source = tfds.data_source("bassgen_stems/folder-8000", data_dir=str(tmp_path / "tfds"),
                            split="train")
  assert len(source) == 6  # 2 good tracks x 3 segments of 0.4 s; 'broken' skipped
  got = _by_track(source)
  assert sorted(got) == ["song00", "song01"]
  target, stems, names = got["song00"]
  assert names == ["drums", "keys"]
  np.testing.assert_allclose(target, truth["song00"]["bass"], atol=1e-6)
  np.testing.assert_allclose(stems[1], truth["song00"]["keys"], atol=1e-6)
  assert "tensorflow" not in sys.modules


def test_musdb_layout_has_train_and_test_splits(tmp_path):
  truth = write_musdb_tree(tmp_path / "musdb", n_train=2, n_test=1, seconds=0.5)
  builder = tfds_builder.make_builder("musdb", tmp_path / "musdb", data_dir=tmp_path / "tfds",
                                      sample_rate=SR, segment_seconds=1.0)
  builder.download_and_prepare()
  splits = builder.as_data_source()
  assert sorted(splits) == ["test", "train"]
  assert len(splits["train"]) == 2 and len(splits["test"]) == 1
  (name, (target, stems, names)), = _by_track(splits["test"]).items()
  assert names == ["drums", "other", "vocals"]
  np.testing.assert_allclose(target, mono(truth[("test", name)]["bass"]), atol=1e-6)
  np.testing.assert_allclose(stems[2], mono(truth[("test", name)]["vocals"]), atol=1e-6)


def test_slakh_layout_sums_bass_stems(tmp_path):
  truth = write_slakh_tree(tmp_path / "slakh", seconds=0.5)
  builder = tfds_builder.make_builder("slakh", tmp_path / "slakh", data_dir=tmp_path / "tfds",
                                      sample_rate=SR, split="validation")
  builder.download_and_prepare()
  (name, (target, _, names)), = _by_track(builder.as_data_source("validation")).items()
  assert name == "Track00001" and names == ["S01"]
  a = truth[name]
  np.testing.assert_allclose(target, a["S00"] + a["S02"], atol=1e-5)


def test_missing_root_is_a_user_error(tmp_path):
  with pytest.raises(BassgenError, match="not a folder"):
    tfds_builder.make_builder("folder", tmp_path / "nope", data_dir=tmp_path / "tfds")
