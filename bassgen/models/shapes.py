"""Models built for their shapes only: the structure (graphdef) and abstract state of a module,
with no initialiser run on any value. Restore saved weights into the shapes
(`bassgen.checkpointing.load_params`) to get a working model."""
from __future__ import annotations

from typing import Any, Callable

import jax
from flax import nnx


class _ShapeOnlyStream(nnx.RngStream):
  """The RNG stream of a shape-only construction: every draw returns the stream's key.

  Flax's streams write their counter on every draw; under `eval_shape`'s trace each write asks
  the tracer for its sharding, which JAX answers by rendering the trace so far, so building a
  model costs time quadratic in its size (2.7 of the demo U-Net's 3.3 s). The values drawn are
  never computed here, so one key serves every draw.
  """

  def __call__(self) -> jax.Array:
    return self.key[...]


def abstract_model(build: Callable[[nnx.Rngs], Any], *filters: Any) -> tuple[Any, ...]:
  """`nnx.split` of the module `build(rngs)` returns, made under `nnx.eval_shape`: its graphdef
  and abstract state (shapes and dtypes, as `filters` split it), with no initialiser run on any
  value. Restore saved weights into the shapes (`load_params`) to get a working model."""

  def make():
    rngs = nnx.Rngs()
    rngs.default = _ShapeOnlyStream(0, tag="default")
    return build(rngs)

  return nnx.split(nnx.eval_shape(make), *filters)
