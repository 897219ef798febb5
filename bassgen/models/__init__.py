"""Networks. Parameters carry logical axis names; they are placed by jit's out_shardings (see
bassgen/sharding.py), not eagerly at creation (`layers.partitioned`)."""
