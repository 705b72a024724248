# The two commands of the README: `make run` and `make test`. Each sets up
# everything it needs on a fresh machine (a virtualenv under the checkout).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= etc/disqontrol.yml
BOOTSTRAP ?= etc/disqontrol_bootstrap.py
PYTEST_ARGS ?=

.PHONY: run test venv test-services bench clean install-systemd

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## run: start the daemon in the foreground on the embedded sqlite broker
run: $(STAMP)
	mkdir -p var
	$(BIN)/disqontrold --config $(CONFIG) --bootstrap $(BOOTSTRAP)

## test-services: install the servers the tests run for real (redis-server)
test-services:
	sh tests/setup/install-services.sh

## test: set up, then run the whole suite
test: $(STAMP) test-services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: print the throughput figures of bench/
bench: $(STAMP) test-services
	$(BIN)/python bench/broker.py
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) var build *.egg-info
