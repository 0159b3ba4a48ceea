# Every target creates .venv and installs what it needs; nothing must be installed by hand.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test bench bench-tiers lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned in the same pip command as transformers/peft so pip takes the CPU wheel
	$(PY) -m pip install --quiet "torch==2.13.0" -e ".[local,agents,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(PY) examples/demo.py .demo/home

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest

bench: install
	HF_HUB_OFFLINE=1 $(PY) bench/store.py

# KV-block injection (time to first token) and LoRA consolidation, on random models built from configs
bench-tiers: install
	HF_HUB_OFFLINE=1 $(PY) bench/kv.py
	HF_HUB_OFFLINE=1 $(PY) bench/lora.py

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .demo build *.egg-info
