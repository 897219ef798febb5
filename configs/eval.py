"""python -m bassgen.main --config=configs/eval.py --mode=eval --config.eval.data=DIR \
       --config.eval.generated=DIR

Scores generated bass stems against a rendered or prepared dataset, next to three baselines (the
true bass through the autoencoder, shuffled pairs, silence); the same as `bassgen eval`. Missing
stems are generated with `eval.checkpoint` unless `eval.no_generate`.
"""
from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.kind = "eval"
  config.variant = "default"
  e = config.eval = ml_collections.ConfigDict()
  e.data = "data/renders/test"  # rendered folder or prepared dataset
  e.generated = "runs/eval/generated"  # <track>.bass.wav
  e.reference = ""  # timbre reference: a file or a folder of <track>.wav ('' = the true bass)
  e.out = ""  # report JSON ('' = GENERATED/report.json)
  e.checkpoint = "experiments/demo"
  e.no_generate = False
  e.seconds = 12.0
  e.tracks = 0  # 0 = all
  e.tracker = "auto"
  e.embedding = "stats"
  e.guidance = 0.0  # when generating; 0 = the model's default
  e.steps = 0  # when generating; 0 = the model's default
  e.seed = 0
  e.baseline_data = ""  # training renders to fit the linear chroma baseline on ('' = no baseline)
  e.overwrite = False
  return config
