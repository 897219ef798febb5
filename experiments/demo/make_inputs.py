"""Writes the bundled demo inputs from held-out renders (never used in training).

  .venv/bin/python experiments/demo/make_inputs.py --renders data/renders/test

inputs/song_mix.flac      song_000001_00022 (D major, 133 BPM, drums/keys/pad/strings), 0-12 s,
                          every stem except the bass
inputs/chorale_mix.flac   a held-out Bach chorale, 0-12 s, every part except the bass
style/reference_bass.flac the bass stem of song_000001_00008 (GM program 39, synth bass 2), 0-8 s,
                          a timbre for --style
"""
import argparse
import pathlib

import numpy as np

from bassgen.data import audio

SR = 16000


def stems_without_bass(track: pathlib.Path, seconds: float) -> np.ndarray:
  parts = [audio.load_audio(p, SR)[0] for p in sorted(track.glob("*.wav"))
           if p.stem not in ("bass", "mix")]
  mix = np.sum(parts, axis=0)[: int(seconds * SR)]
  return mix


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--renders", default="data/renders/test")
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent))
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args()
  root, out = pathlib.Path(args.renders), pathlib.Path(args.out)
  chorale = sorted(p for p in root.iterdir() if p.name.startswith("chorale_"))[3]
  jobs = {
      out / "inputs" / "song_mix.flac": stems_without_bass(root / "song_000001_00022", 12.0),
      out / "inputs" / "chorale_mix.flac": stems_without_bass(chorale, 12.0),
      out / "style" / "reference_bass.flac":
          audio.load_audio(root / "song_000001_00008" / "bass.wav", SR)[0][: 8 * SR],
  }
  for path, wav in jobs.items():
    path.parent.mkdir(parents=True, exist_ok=True)
    audio.save_audio(path, wav, SR, overwrite=args.overwrite)
    print(f"wrote {path} ({len(wav) / SR:.1f} s)")
  print(f"chorale: {chorale.name}")


if __name__ == "__main__":
  main()
