# bassgen — the two commands a new user needs:  make sample   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev
# One stamp per set of extras, so `make test EXTRAS=dev,tfds` on an existing venv installs tfds.
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

# Optional second soundfont for the generalisation test set (apt-get install fluid-soundfont-gm).
FLUID_SF2 ?= /usr/share/sounds/sf2/FluidR3_GM.sf2

MIX   ?= experiments/demo/inputs
OUT   ?= samples
CKPT  ?= experiments/demo
STYLE ?=
SAMPLE_ARGS ?=

.PHONY: install test test-slow sample data demo-train bench clean-venv

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# The default suite in TEST_WORKERS processes (pytest-xdist); each holds its own 8 fake devices.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS)

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

# The main job: a bass stem for each bundled demo mix (or MIX=...), with the bundled demo model.
# It replaces its own earlier outputs in $(OUT); set STYLE=ref.wav for timbre grounding.
sample: $(STAMP)
	$(BIN)/bassgen sample $(MIX) --checkpoint $(CKPT) --out $(OUT) --overwrite $(if $(STYLE),--style $(STYLE)) $(SAMPLE_ARGS)

# Synthetic multitrack data for the demo models (about 10 minutes on 2 cores).
data: $(STAMP)
	$(BIN)/bassgen render --num-songs 300 --seed 0 --sample-rate 16000 --out data/renders/train
	$(BIN)/bassgen render --source chorales --split train --sample-rate 16000 --out data/renders/train
	$(BIN)/bassgen render --num-songs 30 --seed 1 --sample-rate 16000 --out data/renders/test
	$(BIN)/bassgen render --source chorales --split test --sample-rate 16000 --out data/renders/test
	if [ -f $(FLUID_SF2) ]; then \
	  $(BIN)/bassgen render --num-songs 30 --seed 1 --sample-rate 16000 --soundfont $(FLUID_SF2) --out data/renders/test_fluid; \
	  $(BIN)/bassgen render --source chorales --split test --sample-rate 16000 --soundfont $(FLUID_SF2) --out data/renders/test_fluid; \
	else echo "($(FLUID_SF2) missing: apt-get install fluid-soundfont-gm for the other-soundfont test set)"; fi
	$(BIN)/bassgen prepare --layout folder --root data/renders/train --out data/prepared/train --split train --sample-rate 16000
	$(BIN)/bassgen prepare --layout folder --root data/renders/test --out data/prepared/test --split test --sample-rate 16000

# Retrains the bundled demo model from scratch on `make data` (see experiments/demo/README.md):
# autoencoder stage 1 (no pitch terms), stage 2 (fine-tuned with the low-band pitch terms), stages 3
# and 4 (stage 2's decoder alone fine-tuned further, twice; the encoder and latents stay stage 2's),
# then the diffusion model with the harmony pathway and onset channel on those latents.
demo-train: $(STAMP)
	$(BIN)/python -m bassgen.main --config=configs/autoencoder.py:demo_base --workdir=runs/ae_demo_base
	$(BIN)/python -m bassgen.main --config=configs/autoencoder.py:demo --workdir=runs/ae_demo
	$(BIN)/python -m bassgen.main --config=configs/autoencoder.py:demo_decoder --workdir=runs/ae_demo_decoder
	$(BIN)/python -m bassgen.main --config=configs/autoencoder.py:demo_decoder2 --workdir=runs/ae_demo_decoder2
	$(BIN)/python -m bassgen.main --config=configs/autoencoder.py:demo_decoder3 --workdir=runs/ae_demo_decoder3
	$(BIN)/python -m bassgen.main --config=configs/ldm.py:demo --workdir=runs/ldm_demo
	$(BIN)/bassgen bundle --autoencoder runs/ae_demo_decoder3 --ldm runs/ldm_demo --out experiments/demo

# Speed against the machine: the whole `bassgen sample` process (60 s and 10 min mixes, a folder of
# 24 x 20 s; first and second process) and the float32 matmul ceiling, then the library rows.
# Prints rows for BENCHMARKS.md; run it on a quiet machine.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sample_cli.py
	$(BIN)/python benchmarks/bench_autoencoder.py --config configs/autoencoder.py:paper
	$(BIN)/python benchmarks/bench_autoencoder.py --config configs/autoencoder.py:demo
	$(BIN)/python benchmarks/bench_render.py
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_ldm.py --config configs/ldm.py:paper --seconds 180
	$(BIN)/python benchmarks/bench_ldm.py --config configs/ldm.py:demo --seconds 20
	$(BIN)/python benchmarks/bench_long_mix.py --minutes 1
	$(BIN)/python benchmarks/bench_long_mix.py --minutes 10
	$(BIN)/python benchmarks/bench_long_mix.py --minutes 1 --wave-to-wave
	$(BIN)/python benchmarks/bench_compiles.py
	$(BIN)/python benchmarks/memory_table.py --devices 8 --meshes 8x1,2x4,1x8

clean-venv:
	rm -rf $(VENV)
