"""Achieved GFLOP/s against the machine's float32 matmul ceiling, with FLOPs from XLA's own cost
analysis of the compiled programs (not counted by hand)."""
from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp


def compiled_flops(jitted, *args) -> float:
  """FLOPs of one call of `jitted(*args)`, from the compiled program's cost analysis. XLA counts
  a loop's body once, so time loops one iteration at a time (or multiply by the trip count)."""
  while isinstance(jitted, functools.partial):   # e.g. a codec's chunk program bound to it
    args = jitted.args + args
    jitted = jitted.func
  analysis = jitted.lower(*args).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", 0.0))


def matmul_ceiling(n: int = 4096, calls: int = 5) -> dict:
  """Float32 `jnp.dot` GFLOP/s of two n x n matrices on the default device (median of `calls`
  after a warm-up): the most any program here can expect."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  times = []
  for _ in range(calls):
    t0 = time.perf_counter()
    dot(a, b).block_until_ready()
    times.append(time.perf_counter() - t0)
  t = statistics.median(times)
  return {"case": "matmul", "n": n, "device": str(jax.devices()[0].device_kind),
          "seconds": round(t, 4), "gflops": round(2 * n**3 / t / 1e9, 1)}


def rate(flops: float, seconds: float, ceiling_gflops: float) -> dict:
  gflops = flops / seconds / 1e9
  return {"gflop": round(flops / 1e9, 2), "gflops": round(gflops, 1),
          "of_ceiling": round(gflops / ceiling_gflops, 3)}
