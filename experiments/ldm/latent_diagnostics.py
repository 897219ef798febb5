"""Why the demo diffusion model barely uses the mix: the measurements of README.md.

  # cond/null denoising loss of a trained diffusion model at many σ (held-out latent cache)
  .venv/bin/python experiments/ldm/latent_diagnostics.py ratio --ldm runs/ldm_chroma \
      --latents runs/ldm_demo/latents/val
  # where the error sits: per principal direction of the bass latent, per kind of frame
  .venv/bin/python experiments/ldm/latent_diagnostics.py residual --ldm runs/ldm_chroma
  # how far the mix's chroma pins down the bass's pitch class (needs controls.py --cond oracle)
  .venv/bin/python experiments/ldm/latent_diagnostics.py agreement
  # how an autoencoder's latents react to a delay / polarity inversion of held-out bass stems
  .venv/bin/python experiments/ldm/latent_diagnostics.py shift --autoencoder runs/ae_demo
  # how much of a bass latent's variance its own pitch class and loudness explain (linear R²)
  .venv/bin/python experiments/ldm/latent_diagnostics.py pitch --autoencoder runs/ae_demo

`shift` and `pitch` read held-out bass stems from a prepared dataset (default data/prepared/test).
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np


def _basses(prepared: str, every: int, count: int, seconds: float | None):
  from bassgen.data import pipeline, records
  root = pathlib.Path(prepared)
  index = pipeline.read_index(root)
  sr = int(index["sample_rate"])
  for t in index["tracks"][::every][:count]:
    bass = np.concatenate(records.read_track(root / t["file"]), axis=1)[0]
    yield bass[: int(seconds * sr)] if seconds else bass


def _load_ldm(path: str):
  import ml_collections

  from bassgen import checkpointing, sharding
  from bassgen.codec import find_export
  from bassgen.trainers import ldm

  export = find_export(path, "ldm")
  cfg = ml_collections.ConfigDict(checkpointing.load_meta(export)["config"])
  s = ldm.setup(cfg, sharding.make_mesh((-1, 1)))
  return ldm.merge(s, checkpointing.load_params(export, s.abstract_state["params"])), cfg


def ratio(args) -> None:
  import jax
  import jax.numpy as jnp

  from bassgen.data import latents
  from bassgen.diffusion import edm

  model, cfg = _load_ldm(args.ldm)
  batches = latents.make_latent_eval_batches(
      args.latents, crop_frames=cfg.train.crop_frames, batch_size=16, num_examples=64, seed=0,
      with_chroma=cfg.model.get("mix_chroma", False))

  @jax.jit
  def losses(target, mix, sigma, key):
    return tuple(edm.val_loss_at_sigma(model, target, mix, sigma, key, c, sigma_data=1.0)
                 for c in (True, False))

  print("| σ | cond | null | ratio | MSE cond | MSE null |")
  print("|---:|---:|---:|---:|---:|---:|")
  for sigma in args.sigmas:
    c = u = 0.0
    for i, b in enumerate(batches):
      lc, lu = losses(jnp.asarray(b["target"]), jnp.asarray(b["mix"]), sigma, jax.random.key(i))
      c, u = c + float(lc) / len(batches), u + float(lu) / len(batches)
    w = float(edm.loss_weight(jnp.float32(sigma), 1.0))
    print(f"| {sigma:g} | {c:.4f} | {u:.4f} | {c / u:.3f} | {c / w:.4f} | {u / w:.4f} |")


def residual(args) -> None:
  """Where the denoising error sits: per principal direction of the bass latent, and per kind of
  frame (note onset: level jumps > 6 dB; quiet: bass below -50 dBFS; steady: the rest)."""
  import jax
  import jax.numpy as jnp

  from bassgen.data import latents
  from bassgen.diffusion import edm

  model, cfg = _load_ldm(args.ldm)
  crop = latents.LatentCrop(args.latents, crop_frames=cfg.train.crop_frames,
                            silence_threshold_db=None, with_chroma=cfg.model.get("mix_chroma", False))
  n = cfg.train.crop_frames
  target, mix, level = [], [], []
  for e in range(0, crop.num_records, args.every):  # one mix of every track
    r = crop.record(e)
    for st in range(0, r["mix"].shape[0] - n + 1, n):
      target.append(r["target"][st:st + n])
      mix.append(r["mix"][st:st + n])
      level.append(r["level"][st:st + n])
  target, mix, level = (np.stack(a).astype(np.float32) for a in (target, mix, level))
  flat = target.reshape(-1, target.shape[-1])
  eig, vec = np.linalg.eigh(np.cov(flat.T))
  eig, vec = eig[::-1], vec[:, ::-1]
  jump = np.abs(np.diff(level, axis=1, prepend=level[:, :1])) > 6.0
  quiet = level < -50.0
  kinds = {"onset": jump, "quiet": quiet & ~jump, "steady": ~jump & ~quiet}
  print(f"{len(target)} held-out crops of {n} frames; variance share of the first 8 principal "
        f"directions: {np.round(eig[:8] / eig.sum(), 3).tolist()}")

  @jax.jit
  def errors(t, m, sigma, key):
    noise = jax.random.normal(key, t.shape)
    out = []
    for c in (1.0, 0.0):
      d = edm.precondition(model, t + sigma * noise, jnp.full((t.shape[0],), sigma), m,
                           jnp.full((t.shape[0],), c), 1.0)
      out.append(d - t)
    return out

  for sigma in args.sigmas:
    err = {"cond": [], "null": []}
    for i in range(0, len(target), 16):
      ec, eu = errors(jnp.asarray(target[i:i + 16]), jnp.asarray(mix[i:i + 16]), sigma,
                      jax.random.key(i))
      err["cond"].append(np.asarray(ec))
      err["null"].append(np.asarray(eu))
    ec, eu = (np.concatenate(err[k]) for k in ("cond", "null"))
    pc_c = ((ec.reshape(-1, ec.shape[-1]) @ vec) ** 2).sum(0)
    pc_u = ((eu.reshape(-1, eu.shape[-1]) @ vec) ** 2).sum(0)
    fc, fu = (ec ** 2).mean(-1), (eu ** 2).mean(-1)
    print(f"σ={sigma:g}: ratio {pc_c.sum() / pc_u.sum():.3f}; per principal direction (1-8) "
          f"{np.round(pc_c[:8] / pc_u[:8], 2).tolist()}")
    for name, m in kinds.items():
      print(f"  {name:6s} frames {m.mean():5.1%}: share of the null model's error "
            f"{fu[m].sum() / fu.sum():5.1%}, ratio {fc[m].sum() / fu[m].sum():.3f}")


def agreement(args) -> None:
  """How far the mix's harmony pins down the bass's pitch class in these renders: the share of
  frames (bass above -40 dBFS) whose bass pitch class is the mix chroma's strongest bin or among
  its 3 strongest, against another track's bass. Needs a cache with the mix chroma and the oracle
  cache of the same split (controls.py --cond oracle), which holds the bass's chroma."""
  from bassgen.data import latents
  mixes = latents.LatentCrop(args.latents, crop_frames=1, silence_threshold_db=None)
  basses = latents.LatentCrop(args.oracle, crop_frames=1, silence_threshold_db=None)
  recs = []
  for e in range(0, mixes.num_records, args.every):
    rec = mixes.record(e)
    recs.append((rec["chroma"], basses.record(e)["chroma"], rec["level"]))
  hits = {"top1": 0.0, "top3": 0.0, "shuffled_top3": 0.0}
  frames = 0
  for i, (mix, bass, level) in enumerate(recs):
    other = recs[(i + 1) % len(recs)][1]
    n = min(len(mix), len(other))
    keep = (level[:n] > -40.0) & (bass[:n].sum(1) > 0) & (mix[:n].sum(1) > 0) & (other[:n].sum(1) > 0)
    order = np.argsort(-mix[:n][keep], axis=1)
    for name, pcs, k in (("top1", bass, 1), ("top3", bass, 3), ("shuffled_top3", other, 3)):
      hits[name] += float((order[:, :k] == pcs[:n][keep].argmax(1)[:, None]).any(1).sum())
    frames += int(keep.sum())
  print(f"{frames} frames of {len(recs)} tracks: bass pitch class = the mix chroma's strongest "
        f"bin {hits['top1'] / frames:.3f}; among its 3 strongest {hits['top3'] / frames:.3f} "
        f"(another track's bass: {hits['shuffled_top3'] / frames:.3f})")


def shift(args) -> None:
  from bassgen.codec import Codec
  codec = Codec.load(args.autoencoder)
  basses = list(_basses(args.prepared, 6, 10, 10.0))
  refs = [codec.encode(b) for b in basses]

  def change(transform):
    num = den = 0.0
    for b, z0 in zip(basses, refs):
      z1 = codec.encode(transform(b))
      num += float(((z1 - z0) ** 2).sum())
      den += float(((z0 - z0.mean(0)) ** 2).sum())
    return num / den

  print(f"samples per latent frame: {codec.samples_per_latent}")
  for n in args.shifts:
    print(f"delay {n} samples: latent change / latent variance = "
          f"{change(lambda b, n=n: np.r_[np.zeros(n, np.float32), b[:-n]]):.3f}")
  print(f"polarity inversion: {change(lambda b: -b):.3f}")


def pitch(args) -> None:
  from bassgen.codec import Codec
  codec = Codec.load(args.autoencoder)
  spl = codec.samples_per_latent
  zs, chromas, levels = [], [], []
  for b in _basses(args.prepared, 3, 25, None):
    z = codec.encode(b)
    frames = np.pad(b, (0, len(z) * spl - len(b))).reshape(len(z), spl)
    zs.append(z)
    chromas.append(codec.chroma(b))
    levels.append(10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10))
  z, chroma, level = np.concatenate(zs), np.concatenate(chromas), np.concatenate(levels)
  keep = level > -50.0
  z, chroma, level = z[keep], chroma[keep], level[keep]

  def r2(x):
    a = np.c_[x, np.ones(len(x))]
    order = np.random.default_rng(0).permutation(len(a))
    train, test = order[: len(a) // 2], order[len(a) // 2:]
    w = np.linalg.lstsq(a[train], z[train], rcond=None)[0]
    err = a[test] @ w - z[test]
    return 1 - (err ** 2).sum() / ((z[test] - z[test].mean(0)) ** 2).sum()

  pc = np.eye(12)[chroma.argmax(1)]
  lv = np.c_[level, level ** 2]
  print(f"{len(z)} frames with bass above -50 dBFS; held-out linear R² of the bass latent from:")
  print(f"  loudness {r2(lv):.3f}   chroma {r2(chroma):.3f}   pitch class + loudness "
        f"{r2(np.c_[pc, lv]):.3f}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="what", required=True)
  p = sub.add_parser("ratio")
  p.add_argument("--ldm", required=True)
  p.add_argument("--latents", default="runs/ldm_demo/latents/val")
  p.add_argument("--sigmas", type=float, nargs="+", default=[0.2, 0.5, 1, 2, 5, 20, 80])
  p = sub.add_parser("agreement")
  p.add_argument("--latents", default="runs/ldm_demo/latents/val")
  p.add_argument("--oracle", default="runs/ctl_oracle/latents/val")
  p.add_argument("--every", type=int, default=4, help="records per track in the cache")
  p = sub.add_parser("residual")
  p.add_argument("--ldm", required=True)
  p.add_argument("--latents", default="runs/ldm_demo/latents/val")
  p.add_argument("--sigmas", type=float, nargs="+", default=[0.2, 1, 5])
  p.add_argument("--every", type=int, default=4, help="records per track in the cache")
  for name in ("shift", "pitch"):
    p = sub.add_parser(name)
    p.add_argument("--autoencoder", required=True)
    p.add_argument("--prepared", default="data/prepared/test")
    if name == "shift":
      p.add_argument("--shifts", type=int, nargs="+", default=[64, 256, 512])
  args = parser.parse_args()
  {"ratio": ratio, "residual": residual, "agreement": agreement, "shift": shift,
   "pitch": pitch}[args.what](args)


if __name__ == "__main__":
  main()
