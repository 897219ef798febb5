"""The bundled demo model (experiments/demo, what `make sample` uses) loads and makes a bass.

Nothing here depends on the particular model bundled: any valid bundle must pass."""
import pathlib

import numpy as np
import soundfile as sf

from bassgen import cli
from bassgen import codec as codec_lib
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


def test_style_reference_pulls_the_bass_toward_its_statistics(tmp_path, monkeypatch, capsys):
  """Grounding through the real path, with a trained model (random weights would undo at the
  last, ungrounded steps what grounding did): `bassgen sample --style REF` (file -> resample ->
  encode -> sampler, grounded only while sigma > sample.ground_sigma_threshold -> decode). The
  latents handed to the decoder move toward the reference's per-channel statistics, and a second,
  different reference (a synthetic saw bass) moves them toward its own instead."""
  decoded = []
  real_decode = codec_lib.Codec.decode

  def spy(self, z, *args, **kwargs):
    decoded.append(np.asarray(z))
    return real_decode(self, z, *args, **kwargs)

  monkeypatch.setattr(codec_lib.Codec, "decode", spy)
  mix, sr = audio.load_audio(DEMO / "inputs" / "song_mix.flac")
  start = (len(mix) - 3 * sr) // 2
  sf.write(tmp_path / "clip.wav", mix[start:start + 3 * sr], sr)
  t = np.arange(3 * sr) / sr
  saw = 0.4 * (2 * ((t * 98.0) % 1.0) - 1) * (np.sin(2 * np.pi * 2 * t) > -0.3)
  sf.write(tmp_path / "saw.wav", saw.astype(np.float32), sr)
  refs = {"reference": DEMO / "style" / "reference_bass.flac", "saw": tmp_path / "saw.wav"}
  z = {}
  for name in ("none", "reference", "saw"):
    style = [] if name == "none" else ["--style", str(refs[name])]
    code = cli.main(["sample", str(tmp_path / "clip.wav"), "--checkpoint", str(DEMO), "--out",
                     str(tmp_path / name), "--steps", "8", "--seed", "2", *style])
    assert code == 0, capsys.readouterr().err
    z[name] = decoded[-1].reshape(-1, decoded[-1].shape[-1])   # [L, C] of the one variant
  gen = BassGenerator.load(DEMO)
  stats = {n: [s[0] for s in gen.style_of(*audio.load_audio(p))] for n, p in refs.items()}

  def distance(z_LxC, ref):
    mean, std = stats[ref]
    return float(np.linalg.norm(z_LxC.mean(0) - mean) + np.linalg.norm(z_LxC.std(0) - std))

  for ref, other in (("reference", "saw"), ("saw", "reference")):
    assert distance(z[ref], ref) < 0.5 * distance(z["none"], ref), ref      # toward it...
    assert distance(z[ref], ref) < 0.5 * distance(z[other], ref), ref       # ...not elsewhere
