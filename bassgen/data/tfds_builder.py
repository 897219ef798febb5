"""Optional TensorFlow Datasets builder over the same layouts (`pip install .[tfds]`, no TF).

  from bassgen.data import tfds_builder
  builder = tfds_builder.make_builder("musdb", "/data/musdb18hq", data_dir="/data/tfds",
                                      sample_rate=44100)
  builder.download_and_prepare()
  train = builder.as_data_source("train")        # random access, no TensorFlow
  ex = train[0]   # {'track', 'segment', 'start', 'target' [S], 'stems' [K, S], 'stem_names' [K]}

Or, once prepared, `tfds.data_source("bassgen_stems/<config name>", data_dir=...)`. One example is
one segment of one track (`segment_seconds`), audio as mono float32 at `sample_rate`, resampled and
downmixed once while building. Files are written as ArrayRecord (`file_format="array_record"`),
which is what makes reading TensorFlow-free. Bad tracks are skipped with a warning, exactly as in
`bassgen prepare`; the list is logged at the end of each split.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from bassgen.data import prepare
from bassgen.data import sources
from bassgen.errors import BassgenError

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class StemsConfig(tfds.core.BuilderConfig):
  """Where the dataset is and how to read it (see `bassgen.data.sources.scan`).

  Attributes:
    layout: musdb | slakh | moisesdb | folder.
    root: dataset folder.
    sample_rate: every stem is resampled to this rate and downmixed to mono.
    target: the stem to learn.
    target_glob, exclude_glob: folder layout only.
    split: split name for layouts without their own splits (musdb writes `train` and `test`).
    segment_seconds: length of one example.
  """
  layout: str = "folder"
  root: str = ""
  sample_rate: int = prepare.DEFAULT_SAMPLE_RATE
  target: str = "bass"
  target_glob: str | None = None
  exclude_glob: str | None = "mix.*"
  split: str = "train"
  segment_seconds: float = 10.0


class BassgenStems(tfds.core.GeneratorBasedBuilder):
  """Multitrack stems as (target, other stems) segments, for bass (or any stem) generation."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIG_CLASS = StemsConfig

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return self.dataset_info_from_configs(
        description=(f"{cfg.layout} stems from {cfg.root} at {cfg.sample_rate} Hz; target "
                     f"{cfg.target!r}."),
        features=tfds.features.FeaturesDict({
            "track": tfds.features.Text(),
            "segment": tfds.features.Scalar(np.int32),
            "start": tfds.features.Scalar(np.int64),
            "target": tfds.features.Tensor(shape=(None,), dtype=np.float32),
            "stems": tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="bytes"),
            "stem_names": tfds.features.Sequence(tfds.features.Text()),
        }),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data is local
    cfg = self.builder_config
    if cfg.layout == "musdb":
      return {subset: self._generate_examples(subset) for subset in sources.MUSDB_SUBSETS}
    return {cfg.split: self._generate_examples("train")}

  def _generate_examples(self, subset: str):
    cfg = self.builder_config
    scanned = sources.scan(cfg.layout, cfg.root, target=cfg.target, subset=subset,
                           target_glob=cfg.target_glob, exclude_glob=cfg.exclude_glob)
    skipped = list(scanned.skipped)
    seg = max(1, int(round(cfg.segment_seconds * cfg.sample_rate)))
    for track in scanned.tracks:
      loaded = prepare.load_track(track, cfg.sample_rate)
      if isinstance(loaded, sources.Skipped):
        skipped.append(loaded)
        _LOG.warning("skipping track %r: %s (%s)", loaded.track, loaded.reason, loaded.path)
        continue
      _, stems_K = loaded
      names = [name for name, _ in track.stems]
      for j, start in enumerate(range(0, stems_K[0].shape[0], seg)):
        yield f"{track.name}/{j:06d}", {
            "track": track.name,
            "segment": j,
            "start": start,
            "target": stems_K[0][start:start + seg],
            "stems": np.stack([w[start:start + seg] for w in stems_K[1:]]),
            "stem_names": names,
        }
    for s in skipped:
      _LOG.warning("skipped %r: %s (%s)", s.track, s.reason, s.path)


def make_builder(layout: str, root: str | pathlib.Path, *, data_dir: str | pathlib.Path,
                 name: str | None = None, **config) -> BassgenStems:
  """A builder for `root` that writes ArrayRecord files under `data_dir`.

  `config` takes the other `StemsConfig` fields (sample_rate, target, split, ...). The config name
  (default: layout and sample rate, e.g. `musdb-44100`) names the sub-folder of the prepared data.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise BassgenError(f"{root}: not a folder. Give the folder that holds the dataset.")
  sr = config.get("sample_rate", prepare.DEFAULT_SAMPLE_RATE)
  cfg = StemsConfig(name=name or f"{layout}-{sr}", layout=layout, root=str(root.resolve()),
                    **config)
  return BassgenStems(config=cfg, data_dir=str(data_dir), file_format="array_record")
