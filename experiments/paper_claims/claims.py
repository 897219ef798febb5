"""The paper's claims in miniature (issue: evaluation). One subcommand per study; each writes
experiments/paper_claims/results/<study>.json and prints its table.

  .venv/bin/python experiments/paper_claims/claims.py t1 --workdirs runs/t1_16x runs/t1_32x runs/t1_64x
  .venv/bin/python experiments/paper_claims/claims.py t2 [--tracks 24 --seconds 12]
  .venv/bin/python experiments/paper_claims/claims.py t3
  .venv/bin/python experiments/paper_claims/claims.py t4
  .venv/bin/python experiments/paper_claims/claims.py t5 --dpb runs/t5_dpb --sinusoidal runs/t5_sin

All studies use held-out renders (data/renders/test: songs and chorales never used in training),
the bundled demo model unless told otherwise, and fixed seeds. See README.md for the commands that
trained the extra models (T1, T5) and for the results.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

HERE = pathlib.Path(__file__).parent
RESULTS = HERE / "results"


def _save(name: str, result: dict) -> None:
  from bassgen.data.audio import atomic_write_text
  RESULTS.mkdir(exist_ok=True)

  def clean(x):
    if isinstance(x, float) and not np.isfinite(x):
      return None
    if isinstance(x, (np.floating, np.integer)):
      return clean(x.item())
    if isinstance(x, dict):
      return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
      return [clean(v) for v in x]
    return x

  atomic_write_text(RESULTS / f"{name}.json", json.dumps(clean(result), indent=1) + "\n",
                    overwrite=True)
  print(f"wrote {RESULTS / f'{name}.json'}")


def _tracks(data: str, sr: int, n: int, seconds: float | None, min_seconds: float = 0.0):
  """n held-out tracks spread evenly over the sorted list (chorales and songs both)."""
  from bassgen.evaluation import dataset, score
  tracks = dataset.load_tracks(data, sr, seconds=None)
  tracks = [t for t in tracks if len(t.mix) >= min_seconds * sr]
  picked = tracks[:: max(1, len(tracks) // n)][:n]
  if seconds:
    m = int(seconds * sr)
    picked = [dataset.Track(t.name, t.mix[:m], t.bass[:m],
                            None if t.score is None else score.crop_score(t.score, seconds))
              for t in picked]
  return picked


def _programs(data: str) -> dict[str, int]:
  out = {}
  for f in pathlib.Path(data).glob("*/song.json"):
    out[f.parent.name] = int(json.loads(f.read_text())["programs"]["bass"])
  return out


TRACKER = "pyin"  # set from --tracker


def _print_table(header: list[str], rows: list[list[str]], left: int = 1) -> None:
  """A markdown table; the first `left` columns are left-aligned, the rest right-aligned."""
  print("| " + " | ".join(header) + " |")
  print("|" + "".join("---|" if i < left else "---:|" for i in range(len(header))))
  for r in rows:
    print("| " + " | ".join(r) + " |")


def _harmony(bass, sr, mix) -> float:
  from bassgen.evaluation.harmony import harmony_metrics
  return harmony_metrics(bass, sr, mix=mix, tracker=TRACKER)["chord_tone_share"]


def _mean(values) -> float:
  v = [x for x in values if x is not None and np.isfinite(x)]
  return float(np.mean(v)) if v else float("nan")


# ------------------------------------------------------------------------------------------- T1
def t1(args) -> None:
  """Reconstruction of autoencoders trained for the same number of minutes at 3 compressions."""
  import subprocess
  import sys
  rows = {}
  for wd in args.workdirs:
    out = pathlib.Path(wd) / "heldout.json"
    if not out.is_file():
      subprocess.run([sys.executable, str(HERE.parent / "autoencoder" / "evaluate.py"),
                      "--checkpoint", wd, "--data", args.data, "--seconds", str(args.seconds),
                      "--max-tracks", str(args.tracks), "--out", str(out)], check=True)
    res = json.loads(out.read_text())
    from bassgen import checkpointing
    from bassgen.codec import Codec, find_export
    codec = Codec.load(wd)
    meta = checkpointing.load_meta(find_export(wd))
    rows[pathlib.Path(wd).name] = {
        "latent_channels": codec.latent_channels,
        "compression": codec.samples_per_latent / codec.latent_channels,
        "train_minutes": meta["config"]["train"]["max_minutes"], "steps": meta.get("step"),
        "result": res}
  _save("t1", {"data": args.data, "seconds": args.seconds, "tracks": args.tracks, "runs": rows})


# ------------------------------------------------------------------------------------------- T2
def t2(args) -> None:
  """Harmony, rhythm and distribution of generated bass vs the three baselines (`bassgen eval`)."""
  from bassgen.codec import Codec
  from bassgen.evaluation import dataset
  from bassgen.generation import BassGenerator, SampleOptions
  gen = BassGenerator.load(args.checkpoint)
  if args.switch_penalty is not None:  # a runtime knob of the sampler: nothing recompiles
    gen.cfg.sample.harmony_switch_penalty = args.switch_penalty
  sr = gen.sample_rate
  tracks = _tracks(args.data, sr, args.tracks, args.seconds)
  t0 = time.time()
  def given(t):
    """With --oracle-path: the score's bass pitch class and note starts per latent frame (a
    control; the note starts matter only to a model with the onset channel)."""
    if not args.oracle_path:
      return {}
    from bassgen.data import labels
    fps = sr / gen.codec.samples_per_latent
    n = gen.codec.num_latent_frames(len(t.mix))
    return dict(pitch_classes=labels.labels_from_notes(t.score["bass_notes"], n, fps),
                onsets=labels.onsets_from_notes(t.score["bass_notes"], n, fps))

  generated = [gen.generate(t.mix, sr, options=SampleOptions(seed=args.seed, guidance=args.guidance),
                            **given(t))[0]
               for t in tracks]
  gen_s = time.time() - t0
  systems = {"generated": generated}
  systems.update(dataset.baselines(tracks, gen.codec, sr))
  if args.baseline_data:
    from bassgen.evaluation import chroma_baseline
    systems.update(dataset.chroma_baseline_tracks(
        tracks, sr, chroma_baseline.fit_on_renders(args.baseline_data)))
  result = dataset.score(tracks, systems, sr, tracker=TRACKER)
  m = {s: result["systems"][s]["mean"] for s in result["systems"]}
  g = m["generated"]
  claim = {"onset_f_mix": g["onset_f_mix"], "onset_f_mix_met": g["onset_f_mix"] >= 0.5}
  if "score_chord_tone_rate_gap" in g:   # renders with a score: the harmony issue's targets
    claim.update(
        chord_tone_gap=g["score_chord_tone_rate_gap"],
        chord_tone_gap_met=g["score_chord_tone_rate_gap"] >= args.chord_tone_gap,
        pitch_class_gap=g["score_pitch_class_accuracy_gap"],
        pitch_class_gap_met=g["score_pitch_class_accuracy_gap"] >= 0.4,
        median_cents_off=g["median_cents_off"], in_tune_met=g["median_cents_off"] <= 8.0
        and g["share_off_25c"] <= 0.10)
    if "chroma_linear_sampled" in m:
      claim["above_linear_sampled"] = (g["score_chord_tone_rate"]
                                       > m["chroma_linear_sampled"]["score_chord_tone_rate"])
  result.update(checkpoint=args.checkpoint, seconds=args.seconds, guidance=args.guidance,
                switch_penalty=gen.cfg.sample.get("harmony_switch_penalty"), tracker=TRACKER,
                oracle_path=args.oracle_path,
                data=args.data, generation_seconds=gen_s, claim=claim)
  result["subsets"] = _subsets(result)
  print(dataset.markdown_table(result))
  for name, sub in result["subsets"].items():
    print(f"\n{name} ({len(sub['tracks'])} tracks)\n" + dataset.markdown_table(sub))
  print(json.dumps(result["claim"], indent=1))
  _save(args.name or "t2", result)


def _subsets(result: dict) -> dict:
  """The same means (and gaps) over the songs and over the chorales separately."""
  from bassgen.evaluation import dataset
  out = {}
  for kind, prefix in (("songs", "song_"), ("chorales", "chorale_")):
    idx = [i for i, n in enumerate(result["tracks"]) if n.startswith(prefix)]
    if not idx or len(idx) == len(result["tracks"]):
      continue
    sub = {"tracks": [result["tracks"][i] for i in idx], "systems": {}}
    for name, r in result["systems"].items():
      rows = [r["per_track"][i] for i in idx]
      keys = sorted({k for m in rows for k in m})
      sub["systems"][name] = {"mean": {k: _mean([m.get(k) for m in rows]) for k in keys}}
    dataset.add_gaps(sub)
    out[kind] = sub
  return out


# ------------------------------------------------------------------------------------------- T3
def t3(args) -> None:
  """Timbre distance to a reference bass and harmony, with and without grounding, across λ."""
  from bassgen.evaluation.timbre import timbre_distance
  from bassgen.generation import BassGenerator, SampleOptions
  gen = BassGenerator.load(args.checkpoint)
  sr = gen.sample_rate
  tracks = _tracks(args.data, sr, args.tracks, args.seconds)
  everything = {t.name: t for t in _tracks(args.data, sr, 10_000, None)}
  programs = _programs(args.data)
  rows = []
  for t in tracks:
    p = programs[t.name]
    others = sorted(n for n in everything if n != t.name)
    matched = next((n for n in others if programs[n] == p), None)
    # The most distant program number in the GM bass family: another sound altogether.
    mismatched = max(others, key=lambda n: (abs(programs[n] - p), n))
    for kind, ref_name in (("matched", matched), ("different", mismatched)):
      if ref_name is None:
        continue
      ref = everything[ref_name].bass
      for lam in args.strengths:
        opts = SampleOptions(seed=args.seed, ground_strength=lam)
        bass = gen.generate(t.mix, sr, style_wav=None if lam == 0 else ref, options=opts)[0]
        rows.append({"track": t.name, "reference": ref_name, "kind": kind, "strength": lam,
                     "program": p, "reference_program": programs[ref_name],
                     "timbre_fd": timbre_distance(bass, ref, sr),
                     "chord_tone_share": _harmony(bass, sr, t.mix)})
      print(t.name, kind, [round(r["timbre_fd"], 1) for r in rows[-len(args.strengths):]])
  summary = {}
  for kind in ("matched", "different"):
    base = [r for r in rows if r["kind"] == kind and r["strength"] == 0]
    fd0, h0 = _mean([r["timbre_fd"] for r in base]), _mean([r["chord_tone_share"] for r in base])
    for lam in args.strengths:
      sel = [r for r in rows if r["kind"] == kind and r["strength"] == lam]
      fd, h = _mean([r["timbre_fd"] for r in sel]), _mean([r["chord_tone_share"] for r in sel])
      summary[f"{kind}/{lam:g}"] = {"timbre_fd": fd, "chord_tone_share": h,
                                    "timbre_reduction": 1 - fd / fd0, "harmony_change": h / h0 - 1}
  _print_table(["reference", "λ", "timbre FD ↓", "reduction", "chord-tone share", "change"],
               [[*k.split("/"), f"{v['timbre_fd']:.1f}", f"{v['timbre_reduction']:+.0%}",
                 f"{v['chord_tone_share']:.3f}", f"{v['harmony_change']:+.0%}"]
                for k, v in summary.items()])
  _save("t3", {"checkpoint": args.checkpoint, "seconds": args.seconds, "summary": summary,
               "rows": rows})


# ------------------------------------------------------------------------------------------- T4
def t4(args) -> None:
  """Guidance w × rescale φ: latent std vs the conditional sample, decoded-audio health, harmony."""
  import librosa

  from bassgen.generation import BassGenerator, SampleOptions
  gen = BassGenerator.load(args.checkpoint)
  sr = gen.sample_rate
  tracks = _tracks(args.data, sr, args.tracks, args.seconds)

  def latents(mix, w, phi):
    return gen.sample_latents(mix, sr, options=SampleOptions(guidance=w, rescale=phi,
                                                             seed=args.seed))[0]

  rows = []
  for t in tracks:
    z_cond = latents(t.mix, 1.0, 0.0)
    for w in args.guidance:
      for phi in args.rescale:
        z = z_cond if w == 1 else latents(t.mix, w, phi)
        bass = gen.codec.decode(z, len(t.mix))
        flat = float(np.mean(librosa.feature.spectral_flatness(y=bass + 1e-9)))
        rows.append({"track": t.name, "w": w, "phi": phi,
                     "std_ratio": float(np.std(z) / np.std(z_cond)),
                     "peak": float(np.max(np.abs(bass))),
                     "clipped_share": float(np.mean(np.abs(bass) >= 0.99)),
                     "spectral_flatness": flat, "chord_tone_share": _harmony(bass, sr, t.mix)})
    print(t.name, [(r["w"], r["phi"], round(r["std_ratio"], 2)) for r in rows[-len(args.guidance)
                                                                            * len(args.rescale):]])
  summary = {}
  for w in args.guidance:
    for phi in args.rescale:
      sel = [r for r in rows if r["w"] == w and r["phi"] == phi]
      summary[f"w{w:g}/phi{phi:g}"] = {k: _mean([r[k] for r in sel]) for k in
                                       ("std_ratio", "peak", "clipped_share", "spectral_flatness",
                                        "chord_tone_share")}
  _print_table(["w", "φ", "latent std / conditional", "peak", "clipped share",
                "spectral flatness", "chord-tone share"],
               [[k.split("/")[0][1:], k.split("/")[1][3:], f"{v['std_ratio']:.2f}",
                 f"{v['peak']:.2f}", f"{v['clipped_share']:.4f}", f"{v['spectral_flatness']:.4f}",
                 f"{v['chord_tone_share']:.3f}"] for k, v in summary.items()], left=0)
  _save("t4", {"checkpoint": args.checkpoint, "seconds": args.seconds, "summary": summary,
               "rows": rows})


# ------------------------------------------------------------------------------------------- T5
def t5(args) -> None:
  """Harmony per training-length segment at 1×, 2×, 4× the training length: DPB vs sinusoidal."""
  from bassgen.generation import BassGenerator, SampleOptions
  out = {}
  for label, ckpt in (("dpb", args.dpb), ("sinusoidal", args.sinusoidal)):
    gen = BassGenerator.load(ckpt)
    sr = gen.sample_rate
    seg_s = gen.cfg.train.crop_frames * gen.codec.samples_per_latent / sr
    tracks = _tracks(args.data, sr, args.tracks, None, min_seconds=max(args.factors) * seg_s)
    res = {}
    for f in args.factors:
      n = int(f * seg_s * sr)
      scores = []
      for t in tracks:
        bass = gen.generate(t.mix[:n], sr, options=SampleOptions(seed=args.seed))[0]
        m = int(seg_s * sr)
        scores.append(_mean([_harmony(bass[i:i + m], sr, t.mix[i:i + m])
                             for i in range(0, n - m + 1, m)]))
      res[f"{f}x"] = _mean(scores)
      print(label, f"{f}x ({f * seg_s:.1f} s):", round(res[f"{f}x"], 3))
    res["kept_at_max"] = res[f"{max(args.factors)}x"] / res[f"{min(args.factors)}x"]
    out[label] = {"checkpoint": ckpt, "segment_seconds": seg_s, "tracks": len(tracks), **res}
  _print_table(["model", *(f"{f}x" for f in args.factors), "kept"],
               [[label, *(f"{r[f'{f}x']:.3f}" for f in args.factors), f"{r['kept_at_max']:.0%}"]
                for label, r in out.items()])
  _save("t5", out)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="study", required=True)

  def common(p, tracks, seconds):
    p.add_argument("--data", default="data/renders/test")
    p.add_argument("--checkpoint", default="experiments/demo")
    p.add_argument("--tracks", type=int, default=tracks)
    p.add_argument("--seconds", type=float, default=seconds)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tracker", default="pyin", choices=("pyin", "swift-f0"),
                   help="f0 tracker of the harmony metrics (pyin: robust to codec artefacts)")
    return p

  p = common(sub.add_parser("t1"), 24, 10.0)
  p.add_argument("--workdirs", nargs="+", required=True)
  p = common(sub.add_parser("t2"), 24, 12.0)
  p.add_argument("--guidance", type=float, default=None)
  p.add_argument("--switch-penalty", type=float, default=None,
                 help="harmony head's path: nats per pitch-class change (default: the model's)")
  p.add_argument("--name", default=None, help="results/<name>.json (default t2)")
  p.add_argument("--oracle-path", action="store_true",
                 help="condition on the score's bass pitch classes instead of the harmony head's "
                      "path (a control: how the U-Net plays when it is told the true notes)")
  p.add_argument("--baseline-data", default="data/renders/train",
                 help="training renders for the linear chroma baseline ('' = leave it out)")
  p.add_argument("--chord-tone-gap", type=float, default=0.7,
                 help="the share of the shuffled -> true chord-tone gap the claim asks for")
  p = common(sub.add_parser("t3"), 12, 12.0)
  p.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.5, 1.0])
  p = common(sub.add_parser("t4"), 12, 12.0)
  p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
  p.add_argument("--rescale", type=float, nargs="+", default=[0.0, 0.7])
  p = common(sub.add_parser("t5"), 12, 0.0)
  p.add_argument("--dpb", required=True)
  p.add_argument("--sinusoidal", required=True)
  p.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
  args = parser.parse_args()
  global TRACKER  # pylint: disable=global-statement
  TRACKER = args.tracker
  {"t1": t1, "t2": t2, "t3": t3, "t4": t4, "t5": t5}[args.study](args)


if __name__ == "__main__":
  main()
