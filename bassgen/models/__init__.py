"""Networks. Parameters carry logical axis names; they are placed by jit's out_shardings (see
bassgen/sharding.py), not eagerly at creation."""
from flax import nnx

nnx.use_eager_sharding(False)
