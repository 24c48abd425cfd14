# Two commands matter: `make lab` (a local fleet, converged) and `make test` (everything CI runs).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv/bin
LAB ?= rvm
LAB_HOSTS ?= jetson-lab-01 jetson-lab-02 lab-platform:platform lab-monitor:monitoring lab-backup:backup
LAB_INVENTORY := inventories/lab/hosts.yml
export PATH := $(CURDIR)/.venv/bin:$(CURDIR)/.cache/prometheus/usr/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup setup-ml lab lab-down lab-status lint test test-python test-molecule test-rules model sam2

# The controller's toolchain and the lab's packages: all that `make lab` needs.
setup:
	@bash scripts/setup.sh controller

# The model-building stack on top (Ultralytics, torch): training and the parity tests.
setup-ml: setup
	@bash scripts/setup.sh ml

lab: setup
	@if python3 lab/rvmlab.py list | grep -q "^$(LAB)\b"; then \
	  echo "lab $(LAB) is up already; converging it again"; \
	else \
	  python3 lab/rvmlab.py up --lab $(LAB) $(foreach h,$(LAB_HOSTS),--host $(h)) --inventory $(LAB_INVENTORY); \
	fi
	ansible-playbook lab/site.yml -i inventories/lab
	@python3 lab/rvmlab.py list | awk -F'\t' '{print "\nlab " $$1 ": " $$3}'
	@echo "web UIs (from this machine; or ssh -L 9090:<address>:9090 to it from your desk):"
	@python3 lab/rvmlab.py urls --lab $(LAB) | sed 's/^/  /'
	@echo "ssh in:    ssh -i /var/lib/rvm-lab/labs/$(LAB)/id_ed25519 -o UserKnownHostsFile=/var/lib/rvm-lab/labs/$(LAB)/known_hosts root@<address>"
	@echo "or:        python3 lab/rvmlab.py shell --lab $(LAB) --host <name>"
	@echo "journal:   python3 lab/rvmlab.py journal --lab $(LAB)"
	@echo "alerts:    python3 lab/rvmlab.py shell --lab $(LAB) --host lab-monitor -- tail /var/lib/lab-alert-receiver/alerts.jsonl"
	@echo "tear down: make lab-down"

lab-down:
	python3 lab/rvmlab.py down --lab $(LAB)
	rm -f $(LAB_INVENTORY)

lab-status:
	@python3 lab/rvmlab.py list

lint: setup
	ruff check .
	ruff format --check .
	python3 scripts/check_role_specs.py
	python3 scripts/role_docs.py --check
	python3 scripts/app_config_docs.py --check
	ansible-lint
	for inv in production staging; do ansible-playbook site.yml -i inventories/$$inv --syntax-check; done
	ansible-playbook lab/site.yml -i inventories/lab --syntax-check

# The roles' variable tables (from meta/argument_specs.yml) and the app's configuration
# tables (from its pydantic models) in the READMEs; `make lint` fails when they are stale.
.PHONY: docs
docs: setup
	python3 scripts/role_docs.py --write
	python3 scripts/app_config_docs.py --write

test-python: setup-ml
	pytest

# The alert rules parse and their promtool unit tests pass (promtool: unpacked by make setup).
test-rules: setup
	promtool check rules monitoring/rules/*.yml
	promtool test rules monitoring/tests/*.yml

test-molecule: setup
	bash scripts/molecule.sh jetpack
	bash scripts/molecule.sh fleet

# What CI runs (.ci/run calls exactly this). pytest last: its summary closes the log.
test: lint test-rules test-molecule test-python

model: setup-ml
	nice -n 15 $(VENV)/python training/train.py
	nice -n 15 $(VENV)/python training/quantize.py

# SAM2.1 hiera-tiny for deposit masks: train from random init on generated frames with exact
# masks, export the two ONNX graphs + manifests to models/ (models/README.md). The committed
# weights were trained with these defaults on one GPU (about 6 minutes); on a CPU the loop
# stops at --minutes with what it has, e.g. SAM2_TRAIN_ARGS="--batch 8 --minutes 60".
SAM2_RUN := training/runs/sam2
sam2: setup-ml
	nice -n 15 $(VENV)/python training/train_sam2.py --out $(SAM2_RUN)/ckpt.pt --log $(SAM2_RUN)/train.jsonl $(SAM2_TRAIN_ARGS)
	nice -n 15 $(VENV)/python training/export_sam2.py --checkpoint $(SAM2_RUN)/ckpt.pt --training-log $(SAM2_RUN)/train.jsonl
