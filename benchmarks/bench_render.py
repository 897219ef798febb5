"""Rendering speed of `bassgen render`, in x real time per core (song seconds / CPU seconds).

  .venv/bin/python benchmarks/bench_render.py                         # 20 songs + 5 chorales, 16 kHz
  .venv/bin/python benchmarks/bench_render.py --sample-rate 44100 --num-songs 10

Renders in this process (one worker) into a temporary folder and counts, per track, the CPU time of
composing, synthesising every stem, mixing and writing the folder. One warm-up song runs first
(imports, soundfont parsing). Also prints where the time goes (synthesis vs. the rest).
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile
import time


def measure(results) -> tuple[float, float, float]:
  rendered = [r for r in results if r.status == "rendered"]
  audio = sum(r.audio_s for r in rendered)
  cpu = sum(r.cpu_s for r in rendered)
  return audio, cpu, audio / cpu if cpu else float("nan")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num-songs", type=int, default=20)
  parser.add_argument("--chorales", type=int, default=5)
  parser.add_argument("--sample-rate", type=int, default=16000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  from bassgen.data import render, synth  # pylint: disable=g-import-not-at-top

  midirenderer_s = [0.0]
  original = synth.render_midi

  def timed_render_midi(midi, soundfont):
    t0 = time.process_time()
    out = original(midi, soundfont)
    midirenderer_s[0] += time.process_time() - t0
    return out

  synth.render_midi = timed_render_midi
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp)
    render.render_songs_results(out / "warmup", 1, seed=args.seed + 1, sample_rate=args.sample_rate,
                                workers=1)
    midirenderer_s[0] = 0.0
    rows = []
    wall = time.time()
    songs = render.render_songs_results(out / "songs", args.num_songs, seed=args.seed,
                                        sample_rate=args.sample_rate, workers=1)
    rows.append(("procedural songs", len(songs), *measure(songs), midirenderer_s[0]))
    midirenderer_s[0] = 0.0
    if args.chorales:
      chorales = render.render_chorales_results(out / "chorales", split="train",
                                                sample_rate=args.sample_rate, workers=1,
                                                limit=args.chorales)
      rows.append(("chorales", len(chorales), *measure(chorales), midirenderer_s[0]))
    wall = time.time() - wall

  print(f"sample rate {args.sample_rate} Hz, 1 process, wall {wall:.1f} s")
  print(f"{'source':18s} {'tracks':>6s} {'audio s':>8s} {'CPU s':>7s} {'x real time/core':>17s} "
        f"{'midirenderer share':>19s}")
  for name, n, audio, cpu, speed, synth_s in rows:
    print(f"{name:18s} {n:6d} {audio:8.1f} {cpu:7.2f} {speed:17.1f} {synth_s / cpu:18.0%}")
  audio = sum(r[2] for r in rows)
  cpu = sum(r[3] for r in rows)
  print(f"{'all':18s} {sum(r[1] for r in rows):6d} {audio:8.1f} {cpu:7.2f} {audio / cpu:17.1f}")


if __name__ == "__main__":
  main()
