"""Does the demo model's bass fit the mix? Chord-tone share of generated bass on held-out renders,
beside the true bass, a bass from another song (shuffled pairs) and silence.

  .venv/bin/python experiments/demo/harmony.py --data data/renders/test --tracks 16 --seconds 12

For each held-out track: the mix without its bass (sum of the other stems, first --seconds), a
generated bass (`bassgen.generation`, the bundle's default sampler settings, seed 0), and the
share of voiced bass frames whose pitch class is among the mix's 3 strongest chroma bins.
"""
import argparse
import json
import pathlib

import numpy as np


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--checkpoint", default="experiments/demo")
  parser.add_argument("--data", default="data/renders/test")
  parser.add_argument("--tracks", type=int, default=16)
  parser.add_argument("--seconds", type=float, default=12.0)
  parser.add_argument("--out", default=None)
  parser.add_argument("--guidance", type=float, default=None)
  parser.add_argument("--rescale", type=float, default=None)
  args = parser.parse_args()

  from bassgen.data import audio
  from bassgen.evaluation.harmony import harmony_metrics
  from bassgen.generation import BassGenerator, SampleOptions

  gen = BassGenerator.load(args.checkpoint)
  sr = gen.sample_rate
  tracks = sorted(p for p in pathlib.Path(args.data).iterdir() if (p / "bass.wav").is_file())
  tracks = tracks[:: max(1, len(tracks) // args.tracks)][: args.tracks]
  n = int(args.seconds * sr)
  mixes, basses = [], []
  for t in tracks:
    parts = [audio.load_audio(p, sr)[0][:n] for p in sorted(t.glob("*.wav"))
             if p.stem not in ("bass", "mix")]
    mixes.append(np.sum(parts, axis=0))
    basses.append(audio.load_audio(t / "bass.wav", sr)[0][:n])
  scores = {"generated": [], "ground_truth": [], "shuffled": []}
  for i, (mix, bass) in enumerate(zip(mixes, basses)):
    generated = gen.generate(mix, sr, options=SampleOptions(
        seed=0, guidance=args.guidance, rescale=args.rescale))[0]
    other = basses[(i + len(basses) // 2) % len(basses)]
    for name, b in (("generated", generated), ("ground_truth", bass), ("shuffled", other)):
      scores[name].append(harmony_metrics(b, sr, mix=mix)["chord_tone_share"])
  summary = {name: float(np.nanmean(v)) for name, v in scores.items()}
  summary.update(tracks=[t.name for t in tracks], seconds=args.seconds,
                 silence="undefined (no voiced frames)")
  text = json.dumps(summary, indent=1)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
  main()
