r"""Ablation of the harmony head alone: how well does each head read the bass pitch class from the
mix chroma? Trains only the head (bassgen/models/harmony.py) on a latent cache's chroma and
labels, and scores it on the validation cache.

  python experiments/ldm/harmony_head.py --latents runs/ldm_demo/latents \
      --variant equivariant --variant plain --variant linear --steps 3000

Variants: `equivariant` (the demo's head: one net shared by the 12 transpositions), `plain` (the
same conv stack reading the 12 chroma channels as they are: no sharing across keys), `linear`
(one key-shared linear layer over ±8 frames, like the `bassgen eval` baseline but on the model's
STFT chroma). Prints the frame accuracy of the argmax and of the Viterbi path the sampler uses,
for a few switch penalties.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bassgen.data import latents
from bassgen.models import harmony


class LinearHead(nnx.Module):
  """logit_k(t) = sum_{d, j} W[d, j] chroma[t + d, (j + k) mod 12]: key-shared and linear."""

  def __init__(self, context: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(harmony.NUM_PC, 1, kernel_size=(2 * context + 1,), padding="SAME",
                         kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

  def __call__(self, chroma_BxTx12):
    b, t, _ = chroma_BxTx12.shape
    rot = jnp.transpose(harmony.rotations(chroma_BxTx12), (0, 2, 1, 3)).reshape(b * 12, t, 12)
    return jnp.transpose(self.conv(rot).reshape(b, 12, t), (0, 2, 1))


def load(latent_dir, crop, n, seed):
  ds = latents.make_latent_eval_batches(latent_dir, crop_frames=crop, batch_size=n,
                                        num_examples=n, seed=seed, silence_threshold_db=-50.0,
                                        with_chroma=True, with_harmony=True)
  b = ds[0]
  c = b["mix"].shape[-1] - 24
  return jnp.asarray(b["mix"][..., c: c + 12]), jnp.asarray(b["labels"])


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--latents", default="runs/ldm_demo/latents")
  ap.add_argument("--variant", action="append", default=[])
  ap.add_argument("--steps", type=int, default=3000)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--crop", type=int, default=128)
  ap.add_argument("--hidden", type=int, default=48)
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  variants = args.variant or ["equivariant", "plain", "linear"]
  train = latents.make_latent_train_dataset(
      f"{args.latents}/train", crop_frames=args.crop, batch_size=args.batch, seed=0,
      with_chroma=True, with_harmony=True)
  val_chroma, val_labels = load(f"{args.latents}/val", args.crop, 256, 0)
  results = {}
  for v in variants:
    rngs = nnx.Rngs(0)
    head = (LinearHead(8, rngs=rngs) if v == "linear" else
            harmony.HarmonyHead(args.hidden, 9, rngs=rngs, equivariant=v == "equivariant"))
    graphdef, params = nnx.split(head)
    tx = optax.adam(optax.cosine_decay_schedule(1e-3, args.steps, 0.05))
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, chroma, labels):
      def loss_fn(p):
        return harmony.aux_loss(nnx.merge(graphdef, p)(chroma), labels)[0]
      loss, g = jax.value_and_grad(loss_fn)(params)
      upd, opt = tx.update(g, opt, params)
      return optax.apply_updates(params, upd), opt, loss

    it = iter(train)
    t0 = time.time()
    for _ in range(args.steps):
      b = next(it)
      c = b["mix"].shape[-1] - 24
      params, opt, _ = step(params, opt, jnp.asarray(b["mix"][..., c: c + 12]),
                            jnp.asarray(b["labels"]))
    logits = nnx.merge(graphdef, params)(val_chroma)
    ce, acc = harmony.aux_loss(logits, val_labels)
    row = {"val_ce": float(ce), "val_argmax_acc": float(acc),
           "params": int(sum(x.size for x in jax.tree.leaves(params))),
           "train_s": round(time.time() - t0, 1)}
    for pen in (2.0, 4.0, 6.0, 10.0):
      path = harmony.decode_path(logits, pen)
      row[f"val_path_acc_pen{pen:g}"] = float(harmony.path_accuracy(path, val_labels))
    results[v] = row
    print(v, json.dumps(row), flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"latents": args.latents, "steps": args.steps, "results": results}, f, indent=1)


if __name__ == "__main__":
  main()
