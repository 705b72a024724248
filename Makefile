# The two commands of the README: `make run` and `make test`. Each sets up
# everything it needs on a fresh machine (a virtualenv under the checkout).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= etc/disqontrol.yml
BOOTSTRAP ?= etc/disqontrol_bootstrap.py
PYTEST_ARGS ?=
# make test runs the suite in TEST_WORKERS pytest-xdist processes: its tests
# mostly wait on real daemons' timers, not on the CPU, so 2 workers on 2 cores
# halve the wall time. Each worker has its own redis-server (and Disque
# cluster), ports and tmp dirs. TEST_WORKERS=0 runs it in one process; one
# test alone: .venv/bin/python -m pytest tests/unit/test_backoff.py -k NAME
# (serial unless given -n). worksteal: a worker that runs out takes tests
# queued for the other, so one slow test file does not end the run alone.
TEST_WORKERS ?= 2

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
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

## bench: print the throughput figures of bench/
bench: $(STAMP) test-services
	$(BIN)/python bench/broker.py --engine all
	$(BIN)/python bench/throughput.py --engine sqlite
	$(BIN)/python bench/throughput.py --engine redis
	$(BIN)/python bench/http_worker.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/autoscale.py

clean:
	rm -rf $(VENV) var build *.egg-info

## install-systemd: install the units and the disqontrol user (as root); then
## `systemctl enable --now disqontrold` (and disqontrol-metrics.timer for
## node_exporter's textfile collector). PREFIX: where disqontrold is installed.
PREFIX ?= /usr/local
UNIT_DIR ?= /etc/systemd/system
install-systemd:
	getent group disqontrol >/dev/null || groupadd --system disqontrol
	getent passwd disqontrol >/dev/null || useradd --system --gid disqontrol \
		--home-dir /var/lib/disqontrol --no-create-home --shell /usr/sbin/nologin disqontrol
	install -d -m 0755 /etc/disqontrol
	sed -e 's#^  broker: sqlite:.*#  broker: sqlite:///var/lib/disqontrol/disqontrol.db#' \
		-e 's#^  log_dir: .*#  log_dir: /var/log/disqontrol#' -e 's#^  run_dir: .*#  run_dir: /run/disqontrol#' \
		-e '1i # Installed by make install-systemd: broker, log_dir and run_dir match the unit. The queues\
# below are the checkout'"'"'s examples (their workers, crontab and bootstrap file are not installed):\
# replace them with yours; `disqontrold --check --config THIS` says what is missing.' \
		etc/disqontrol.yml > /etc/disqontrol/disqontrol.yml.example
	test -e /etc/disqontrol/disqontrol.yml || echo "install-systemd: now write /etc/disqontrol/disqontrol.yml" \
		"(start from /etc/disqontrol/disqontrol.yml.example; its paths match the unit)"
	sed -e 's#/usr/local/bin/disqontrold #$(PREFIX)/bin/disqontrold #' -e 's#/usr/local/bin/disqontrolctl #$(PREFIX)/bin/disqontrolctl #' \
		systemd/disqontrold.service > $(UNIT_DIR)/disqontrold.service
	sed 's#/usr/local/bin/disqontrolctl#$(PREFIX)/bin/disqontrolctl#' systemd/disqontrol-metrics.service \
		> $(UNIT_DIR)/disqontrol-metrics.service
	cp systemd/disqontrol-metrics.timer $(UNIT_DIR)/disqontrol-metrics.timer
	install -D -m 0644 docs/operations.md /usr/share/doc/disqontrol/operations.md  # the units' Documentation=
	chmod 0644 $(UNIT_DIR)/disqontrold.service $(UNIT_DIR)/disqontrol-metrics.service $(UNIT_DIR)/disqontrol-metrics.timer
	systemctl daemon-reload 2>/dev/null || echo "install-systemd: systemd is not running here; run 'systemctl daemon-reload' on the target"
