"""The bundled demo model (experiments/demo, what `make sample` uses) loads and makes a bass.

Nothing here depends on the particular model bundled: any valid bundle must pass."""
import pathlib

import numpy as np

from bassgen.data import audio
from bassgen.generation import BassGenerator, SampleOptions

DEMO = pathlib.Path(__file__).parents[1] / "experiments" / "demo"


def test_bundled_demo_generates_two_seconds_from_a_two_second_slice():
  gen = BassGenerator.load(DEMO)
  mix, sr = audio.load_audio(DEMO / "inputs" / "song_mix.flac")
  assert len(mix) >= 2 * sr, "the demo mix is shorter than 2 s"
  start = (len(mix) - 2 * sr) // 2   # from the middle, where the song plays
  clip = mix[start:start + 2 * sr]
  basses = gen.generate(clip, sr, options=SampleOptions(steps=8, seed=0))
  assert len(basses) == 1
  bass = np.asarray(basses[0])
  assert bass.shape == clip.shape
  assert np.all(np.isfinite(bass))
  rms_db = 10 * np.log10(np.mean(bass.astype(np.float64) ** 2) + 1e-20)
  assert rms_db > -60.0, f"the demo's bass is silent ({rms_db:.1f} dBFS)"
  assert np.max(np.abs(bass)) <= 4.0, "the demo's bass is far out of range"
