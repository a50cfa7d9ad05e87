# VoiceGuard: `make demo` scores the bundled example; `make test` runs every test.
# Both create a local virtual environment (.venv) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup system-deps clean bench checkpoint

$(STAMP): pyproject.toml
	@$(PY) -c "import shutil; f = shutil.disk_usage('.').free / 2**30; f < 7.5 and print(f'warning: {f:.1f} GiB free here; the venv (torch with its CUDA libraries) needs about 7 GiB')"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.14.1" "torchaudio==2.11.1"
	$(BIN)/pip install -q -e ".[test,synth,ray]"
	touch $(STAMP)

setup: system-deps $(STAMP)

# espeak-ng, festival, flite (spoof generation and tests), sox (AMR-NB), ffmpeg (m4a/amr/webm input)
system-deps:
	@if ! command -v espeak-ng >/dev/null || ! command -v festival >/dev/null || ! command -v flite >/dev/null \
	    || ! command -v sox >/dev/null || ! command -v ffmpeg >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq espeak-ng festival festvox-kallpc16k \
	    festvox-us-slt-hts festvox-italp16k festvox-itapc16k flite sox libsox-fmt-all ffmpeg >/dev/null; \
	fi

demo: setup
	$(BIN)/voiceguard score examples/*.flac --plot out/demo.png
	$(BIN)/voiceguard score examples/call_stereo_8k_ulaw.wav --channels each --plot out/call.png

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python scripts/bench.py

# Rebuilds the shipped checkpoint from ../shared/corpus (about 7 h on 2 CPU cores): local spoofs, six networks
# trained apart (on other spoofs; the fourth and fifth read the phase through the modified group delay, the sixth
# through the instantaneous frequency deviation), combined into one; then its checks and its model card.
GEN := data/gen/manifest.csv data/gen2/manifest.csv
checkpoint: setup
	$(BIN)/python scripts/make_spoofs.py --out data/gen --corpus ../shared/corpus
	$(BIN)/python scripts/make_more_vocoded.py --n 600
	$(BIN)/python scripts/make_more_vocoded.py --vocoders hifigan --out data/gen4 --n 450 --max-dur 8 --seed 4 --source local-hifigan
	$(BIN)/python scripts/train_default.py --adversary 0.3 --generated $(GEN) --out runs/T/voiceguard
	$(BIN)/python scripts/train_default.py --adversary 0.3 --generated $(GEN) data/gen4/manifest.csv --out runs/AH/voiceguard
	$(BIN)/python scripts/train_default.py --adversary 0.3 --generated data/gen/manifest.csv data/gen4/manifest.csv --generators piper hifigan --out runs/AN/voiceguard
	$(BIN)/python scripts/train_default.py --adversary 0.3 --generated $(GEN) --features mgd --out runs/PG/voiceguard
	$(BIN)/python scripts/train_default.py --adversary 0.3 --generated data/gen/manifest.csv data/gen4/manifest.csv --generators piper hifigan --features mgd --out runs/PN/voiceguard
	$(BIN)/python scripts/train_default.py --adversary 0.3 --generated $(GEN) --features ifd --out runs/PI/voiceguard
	$(BIN)/python scripts/train_default.py --adversary 0.3 --generated data/gen/manifest.csv data/gen4/manifest.csv --generators piper hifigan --features ifd --out runs/PJ/voiceguard
	$(BIN)/python scripts/combine_checkpoints.py runs/T/voiceguard runs/AH/voiceguard runs/AN/voiceguard runs/PG/voiceguard runs/PN/voiceguard runs/PI/voiceguard runs/PJ/voiceguard --out checkpoints/voiceguard
	$(BIN)/python scripts/field_checks.py
	$(BIN)/python scripts/heldout_checks.py
	$(BIN)/voiceguard synth --out data/gen5 --engines kokoro --vocoders -n 30 --seed 7
	$(BIN)/voiceguard synth --out data/gen6 --engines kokoro --vocoders -n 50 --seed 11
	$(BIN)/python scripts/finetune_check.py --new data/gen6/manifest.csv --test data/gen5/manifest.csv --source hexgrad+kokoro --seeds 0 1 2
	for layout in manifest folders fakes-only; do $(BIN)/python scripts/finetune_check.py --layout $$layout --seeds 0 1; done
	$(BIN)/python scripts/model_card.py

clean:
	rm -rf $(VENV) out .pytest_cache
