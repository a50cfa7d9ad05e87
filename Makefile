# VoiceGuard: `make demo` scores the bundled example; `make test` runs every test.
# Both create a local virtual environment (.venv) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup system-deps clean bench

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

clean:
	rm -rf $(VENV) out .pytest_cache
