r"""Does the autoencoder keep the notes? The true bass of held-out renders, clean and through each
autoencoder, scored against the score (song.json) with the same pitch tracker.

  python experiments/autoencoder/pitch_fidelity.py --data data/renders/test \
      --checkpoint bundled=experiments/demo --checkpoint new=runs/ae_demo \
      --out experiments/autoencoder/pitch_demo.json

Per track (first --seconds of bass.wav): chord-tone rate against the written chords, pitch-class
accuracy against the written bass, median cents off the semitone grid, share of frames > 25 cents
off, voiced rate, and the log-mel L1 (dB) of the reconstruction. Means over tracks are printed as
a Markdown table, with each system's ratio to the clean bass.
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from bassgen.codec import Codec
from bassgen.data import audio
from bassgen.evaluation import pitch, reconstruction, score

KEYS = ("score_chord_tone_rate", "score_pitch_class_accuracy", "median_cents_off",
        "share_off_25c", "voiced_rate", "log_mel_l1_db")


def spread(items, n):
  return items if not n else items[:: max(1, len(items) // n)][:n]


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--data", default="data/renders/test")
  ap.add_argument("--checkpoint", action="append", default=[], help="NAME=PATH (repeatable)")
  ap.add_argument("--seconds", type=float, default=20.0)
  ap.add_argument("--max-tracks", type=int, default=0)
  ap.add_argument("--tracker", default="auto", choices=pitch.TRACKERS)
  ap.add_argument("--out", default="")
  args = ap.parse_args()

  folders = sorted(p for p in pathlib.Path(args.data).iterdir() if (p / "song.json").is_file())
  folders = spread(folders, args.max_tracks)
  codecs = {}
  for spec in args.checkpoint:
    name, _, path = spec.partition("=")
    codecs[name] = Codec.load(path)
  sr = next(iter(codecs.values())).sample_rate if codecs else 16000
  rows = {name: [] for name in ["clean", *codecs]}
  for p in folders:
    bass = audio.load_audio(p / "bass.wav", sr)[0][: int(args.seconds * sr)]
    sc = score.crop_score(score.read_score(p), args.seconds)
    systems = {"clean": bass}
    for name, c in codecs.items():
      systems[name] = c.reconstruct(bass)[: len(bass)]
    for name, wav in systems.items():
      track = pitch.track_pitch(wav, sr, tracker=args.tracker)
      m = score.score_metrics(track, sc)
      m["log_mel_l1_db"] = (0.0 if name == "clean" else
                            reconstruction.log_mel_l1_db(bass, wav, sr))
      m["track"] = p.name
      rows[name].append(m)
    print(p.name, {n: round(r[-1]["score_pitch_class_accuracy"], 3) for n, r in rows.items()},
          flush=True)

  means = {n: {k: float(np.nanmean([m[k] for m in r])) for k in KEYS} for n, r in rows.items()}
  print("\n| system | " + " | ".join(KEYS) + " |")
  print("|---|" + "---:|" * len(KEYS))
  for n, m in means.items():
    print(f"| {n} | " + " | ".join(f"{m[k]:.3f}" for k in KEYS) + " |")
  clean = means["clean"]
  for n, m in means.items():
    if n != "clean":
      print(f"{n}: chord-tone {m['score_chord_tone_rate'] / clean['score_chord_tone_rate']:.2f}x clean, "
            f"pc acc {m['score_pitch_class_accuracy'] / clean['score_pitch_class_accuracy']:.2f}x, "
            f"voiced {m['voiced_rate'] / clean['voiced_rate']:.2f}x")
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(
        {"data": args.data, "seconds": args.seconds, "tracker": pitch.resolve_tracker(args.tracker),
         "tracks": [p.name for p in folders], "checkpoints": args.checkpoint, "means": means,
         "per_track": rows}, indent=1))


if __name__ == "__main__":
  main()
