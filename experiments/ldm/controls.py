"""Control experiments for the cond/null ratio of the diffusion model (experiments/ldm/README.md).

Each builds a copy of a latent cache (one made with `model.mix_chroma`) with one thing swapped, so
the very same U-Net and recipe (`configs/ldm.py:demo`) can be trained on it and its validation
logs the same cond/null losses at σ ∈ {0.2, 0.5, 1, 2, 5}:

  --target mel     the *target* (the bass latent) becomes a phase-free description of the same bass
                   at the same frame rate and channel count: its log-mel spectrum (`--bands` bands,
                   30 Hz - 2 kHz) averaged over each latent frame, normalised per channel with the
                   training split's statistics. Separates "the mix does not determine the bass" from
                   "the autoencoder's latent stores detail that the mix cannot determine".
  --cond oracle    the *condition* gets the answer's musical content: its last 13 channels (the mix
                   chroma and one latent channel) become the true bass's own pitch-class profile and
                   its loudness per frame. An upper bound for any condition that could at best read
                   the bass's notes and dynamics off the mix.

  .venv/bin/python experiments/ldm/controls.py --target mel --out runs/ctl_mel/latents
  .venv/bin/python -m bassgen.main --config=configs/ldm.py:demo --workdir=runs/ctl_mel \\
      --config.train.num_steps=6000
  .venv/bin/python experiments/ldm/curve.py runs/ctl_mel

These are measurements, not models anyone can decode (log-mel frames carry no phase; an oracle
condition needs the answer).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib

import numpy as np


def mel_frames(bass: np.ndarray, sr: int, samples_per_frame: int, num_frames: int,
               bands: int) -> np.ndarray:
  """float32[num_frames, bands]: log-mel power averaged over each latent frame's samples."""
  import librosa  # pylint: disable=g-import-not-at-top
  hop = samples_per_frame // 8
  padded = np.zeros(num_frames * samples_per_frame, np.float32)
  n = min(len(bass), len(padded))
  padded[:n] = bass[:n]
  mel = librosa.feature.melspectrogram(y=padded, sr=sr, n_fft=4 * hop, hop_length=hop,
                                       center=False, n_mels=bands, fmin=30.0, fmax=2000.0)
  mel = np.pad(mel, ((0, 0), (0, num_frames * 8 - mel.shape[1])), mode="edge")
  mel = mel[:, : num_frames * 8].reshape(bands, num_frames, 8).mean(-1)
  return np.log(mel.T + 1e-6).astype(np.float32)


def build(latents_dir: pathlib.Path, prepared: pathlib.Path, out: pathlib.Path, *, target: str,
          cond: str, bands: int, autoencoder: str) -> None:
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  from bassgen.data import latents, pipeline, records  # pylint: disable=g-import-not-at-top

  from bassgen.codec import Codec  # pylint: disable=g-import-not-at-top

  codec = Codec.load(autoencoder) if cond == "oracle" else None
  feats: dict[str, dict[str, np.ndarray]] = {}
  oracle: dict[str, dict[str, np.ndarray]] = {}
  for split, source in (("train", "train"), ("val", "test")):
    index = latents.read_latent_index(latents_dir / split)
    prep = pipeline.read_index(prepared / source)
    by_name = {pathlib.Path(t["file"]).stem: t for t in prep["tracks"]}
    sr = int(index["sample_rate"])
    spl = int(round(sr / index["frames_per_second"]))
    feats[split], oracle[split] = {}, {}
    for t in index["tracks"]:
      stems = np.concatenate(records.read_track(prepared / source / by_name[t["name"]]["file"]),
                             axis=1)
      if target == "mel":
        feats[split][t["name"]] = mel_frames(stems[0], sr, spl, t["num_frames"], bands)
      if codec is not None:
        level = latents.frame_levels_db(stems[0], spl, t["num_frames"])
        level = (np.maximum(level, -80.0) + 40.0) / 20.0  # about zero mean, unit scale
        oracle[split][t["name"]] = np.c_[level, codec.chroma(stems[0])].astype(np.float32)
  if target == "mel":
    train = np.concatenate(list(feats["train"].values()))
    mean, std = train.mean(0), train.std(0) + 1e-6
  for split in ("train", "val"):
    index = latents.read_latent_index(latents_dir / split)
    (out / split / "tracks").mkdir(parents=True, exist_ok=True)
    for t in index["tracks"]:
      reader = array_record_module.ArrayRecordReader(str(latents_dir / split / t["file"]))
      recs = [latents.decode_record(r) for r in reader.read(list(range(reader.num_records())))]
      reader.close()
      writer = array_record_module.ArrayRecordWriter(str(out / split / t["file"]), "group_size:1")
      for r in recs:
        tgt = (feats[split][t["name"]] - mean) / std if target == "mel" else r["target"]
        mix, chroma = r["mix"], r["chroma"]
        if cond == "oracle":  # [mix latent minus its last channel | bass level | bass chroma]
          level_chroma = oracle[split][t["name"]]
          mix = np.c_[mix[:, :-1], level_chroma[:, :1]]
          chroma = level_chroma[:, 1:]
        writer.write(latents._encode_record(mix, tgt, r["level"], chroma))  # pylint: disable=protected-access
      writer.close()
    index = dict(index, control={"target": target, "cond": cond,
                                 "script": "experiments/ldm/controls.py"})
    tmp = out / split / f".{latents.INDEX_NAME}.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / split / latents.INDEX_NAME)
    print(f"{split}: {len(index['tracks'])} tracks -> {out / split}")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--latents", default="runs/ldm_demo/latents", help="cache with mix chroma")
  p.add_argument("--prepared", default="data/prepared")
  p.add_argument("--out", required=True, help="e.g. runs/ctl_mel/latents")
  p.add_argument("--target", choices=("latent", "mel"), default="latent")
  p.add_argument("--cond", choices=("mix", "oracle"), default="mix")
  p.add_argument("--bands", type=int, default=32, help="= the diffusion model's latent_channels")
  p.add_argument("--autoencoder", default="runs/ae_demo", help="for the oracle's chroma frames")
  a = p.parse_args()
  if a.target == "latent" and a.cond == "mix":
    p.error("nothing to swap: give --target mel and/or --cond oracle")
  build(pathlib.Path(a.latents), pathlib.Path(a.prepared), pathlib.Path(a.out), target=a.target,
        cond=a.cond, bands=a.bands, autoencoder=a.autoencoder)


if __name__ == "__main__":
  main()
