"""`bassgen reconstruct IN OUT [--checkpoint DIR]`: audio through the autoencoder, any length."""
from __future__ import annotations

import argparse
import pathlib

from bassgen.codec import Codec
from bassgen.data import audio
from bassgen.errors import BassgenError

DEFAULT_CHECKPOINT = "experiments/demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("input", help="audio file (WAV, FLAC, MP3, OGG; any rate, channels, length)")
  parser.add_argument("output", help="output .wav or .flac")
  parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                      help="autoencoder export, training workdir or bundle (default: the demo model)")
  parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def run(args: argparse.Namespace) -> int:
  out = pathlib.Path(args.output)
  if out.exists() and not args.overwrite:
    raise BassgenError(f"{out}: already exists. Pass --overwrite to replace it.")
  audio.check_writable_dir(out.parent if str(out.parent) else ".")
  codec = Codec.load(args.checkpoint)
  wav, sr = audio.load_audio(args.input)
  y = codec.reconstruct(audio.resample(wav, sr, codec.sample_rate))
  y = audio.resample(y, codec.sample_rate, sr)[: len(wav)]
  audio.save_audio(out, y, sr, overwrite=args.overwrite)
  print(f"wrote {out} ({len(y) / sr:.2f} s at {sr} Hz)")
  return 0
