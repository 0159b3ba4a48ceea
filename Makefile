# Every target creates .venv and installs what it needs; nothing must be installed by hand.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install postgres-server demo test bench bench-scale bench-tiers lint clean

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned in the same pip command as transformers/peft so pip takes the CPU wheel
	$(PY) -m pip install --quiet "torch==2.13.0" -e ".[local,agents,postgres,dev]"
	touch $(STAMP)

install: $(STAMP)

# the backend tests start a throwaway PostgreSQL cluster: install the server when initdb is missing (Debian)
postgres-server:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; else \
		echo "installing PostgreSQL (Debian package postgresql) for the backend tests"; \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql || { $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; }; \
	fi

demo: install
	HF_HUB_OFFLINE=1 $(PY) examples/demo.py .demo/home

test: install postgres-server
	HF_HUB_OFFLINE=1 $(PY) -m pytest

bench: install
	HF_HUB_OFFLINE=1 $(PY) bench/store.py

# 1,000,000 cubes (hashing embedder) then a 100k MiniLM subset: ingest rate, recall p50/p95, memory, disk (~30 min)
bench-scale: install
	HF_HUB_OFFLINE=1 $(PY) bench/scale.py

# KV-block injection (time to first token) and LoRA consolidation, on random models built from configs
bench-tiers: install
	HF_HUB_OFFLINE=1 $(PY) bench/kv.py
	HF_HUB_OFFLINE=1 $(PY) bench/lora.py

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .demo build *.egg-info
