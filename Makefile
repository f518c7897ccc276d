# One entry point for people and CI. Every target sets itself up first (scripts/bootstrap.sh:
# Debian packages when root and missing, .venv with the project and its test tools).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.bootstrap-stamp

.PHONY: all demo test lint coverage bench bench-kernel faults clean help

all: test

help:
	@echo "make demo      run the demo on the simulated storage (no NVMe kernel modules needed)"
	@echo "make test      ruff + mypy + the whole test suite"
	@echo "make test-kernel  tests/kernel in a throwaway VM on Debian's kernels (real nvmet, nvme-tcp; KERNEL=6.1|6.12)"
	@echo "make integration  the seed's workflow (stafd + stacd on nvmet) in that VM, PASS/FAIL per step"
	@echo "make lint      ruff check, mypy (strict on stas/)"
	@echo "make coverage  tests under coverage; HTML in .build/coverage/"
	@echo "make bench     benchmarks under bench/ (BENCH_QUICK=1: small, for CI smoke)"
	@echo "make faults    fault campaign: tests/faults, then the table in .build/faults.md"
	@echo "make faults-kernel  its real-kernel rows (stafd kernel backend + stacd, nvmet in the VM)"

$(STAMP): pyproject.toml scripts/bootstrap.sh
	@bash scripts/bootstrap.sh

setup: $(STAMP)

demo: $(STAMP)
	@$(PY) nvmet-harness/demo.py

lint: $(STAMP)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy

test: $(STAMP)
	@$(VENV)/bin/ruff check . || { echo "make test: ruff found problems (see above)"; exit 1; }
	@$(VENV)/bin/mypy || { echo "make test: mypy found problems (see above; strict on stas/, [tool.mypy])"; exit 1; }
	@$(VENV)/bin/pytest -q -p no:cacheprovider
	@$(MAKE) --no-print-directory test-kernel
	@$(MAKE) --no-print-directory integration

# Unit tests, then the seed's integration run in the VM (when the machine can), all under
# coverage, subprocesses and threads included; per-file table, HTML in .build/coverage/.
COVDATA := $(CURDIR)/.build/coverage-data
coverage: $(STAMP)
	@rm -rf $(COVDATA) .build/coverage && mkdir -p $(COVDATA)
	@$(PY) scripts/coverage_hook.py install
	@COVERAGE_PROCESS_START=$(CURDIR)/pyproject.toml $(VENV)/bin/coverage run -m pytest -q -p no:cacheprovider
	@reason=$$($(PY) nvmet-harness/vm/runner.py --check) || { echo "SKIP: integration under coverage: $$reason"; exit 0; }; \
	COVERAGE_PROCESS_START=$(CURDIR)/pyproject.toml COVERAGE_FILE=$(COVDATA)/.coverage \
	$(PY) nvmet-harness/vm/runner.py --share $(COVDATA) -e COVERAGE_PROCESS_START -e COVERAGE_FILE -- \
	$(VENV)/bin/coverage run nvmet-harness/integration.py
	@$(VENV)/bin/coverage combine -q
	@$(VENV)/bin/coverage report
	@$(VENV)/bin/coverage html -q -d .build/coverage
	@echo "HTML report: .build/coverage/index.html"

bench: $(STAMP)
	@$(PY) bench/run.py
	@$(PY) bench/startup.py $(if $(BENCH_QUICK),--quick)

# Hostile discovery controllers against stafd: assertions first, then the report table.
faults: $(STAMP)
	@$(VENV)/bin/pytest -q -p no:cacheprovider tests/faults
	@$(PY) tests/faults/campaign.py --readme

# The same campaign's real-kernel rows (stafd kernel backend + stacd on nvmet, in the VM),
# merged into the table with the loopback rows of the last `make faults`.
.PHONY: faults-kernel
faults-kernel: $(STAMP)
	@reason=$$($(PY) nvmet-harness/vm/runner.py --check) || { echo "SKIP: make faults-kernel: $$reason"; exit 0; }; \
	mkdir -p .build/faults-kernel; \
	$(PY) nvmet-harness/vm/runner.py --share $(CURDIR)/.build/faults-kernel --timeout 1200 -- \
	  $(PY) nvmet-harness/faults_kernel.py -o $(CURDIR)/.build/faults-kernel/rows.json; rc=$$?; \
	$(PY) tests/faults/campaign.py --merge-only --readme; exit $$rc

# The same daemons beside nvme-cli on the real kernel (in the VM), installed first as
# `make install` lays them out (into .build/bench-kernel-install); BENCH_KERNEL=6.12 for trixie's.
BENCH_KERNEL ?= 6.1
# runner.py --check: 0 can run, 1 cannot (SKIP with its reason), 2 a usage error (fails).
bench-kernel: $(STAMP)
	@reason=$$($(PY) nvmet-harness/vm/runner.py --kernel $(BENCH_KERNEL) --check); rc=$$?; \
	if [ $$rc -eq 2 ]; then echo "make bench-kernel: runner.py rejected BENCH_KERNEL=$(BENCH_KERNEL)" >&2; exit 2; fi; \
	if [ $$rc -ne 0 ]; then echo "SKIP: make bench-kernel: $$reason"; exit 0; fi; \
	$(PY) bench/kernel_bench.py --kernel $(BENCH_KERNEL)

# KERNEL: which Debian kernels to boot (6.1 = Debian 12's, 6.12 = Debian 13's, with NVMe
# in-band auth and TLS); each one the machine cannot run is skipped with its reason.
.PHONY: test-kernel integration
KERNEL ?= 6.1 6.12
test-kernel: $(STAMP)
	@rc=0; for k in $(KERNEL); do \
	  reason=$$($(PY) nvmet-harness/vm/runner.py --kernel $$k --check --prepare); krc=$$?; \
	  if [ $$krc -eq 2 ]; then echo "make test-kernel: runner.py rejected KERNEL=$$k" >&2; rc=2; continue; fi; \
	  if [ $$krc -ne 0 ]; then echo "SKIP: make test-kernel KERNEL=$$k: $$reason"; continue; fi; \
	  echo "== tests/kernel on Debian's $$k kernel"; \
	  $(PY) nvmet-harness/vm/runner.py --kernel $$k --timeout 1200 -- $(PY) -m pytest -q -p no:cacheprovider tests/kernel || rc=1; \
	done; \
	if $(PY) nvmet-harness/vm/runner.py --check >/dev/null; then \
	  echo "== tests/kernel/test_nbft_kernel.py with a generated NBFT handed to qemu"; \
	  mkdir -p .build && $(PY) nvmet-harness/nbft_gen.py -o .build/NBFT --hfi mac=52:54:00:12:34:56,ip=10.0.2.15 \
	    --discovery "uri=nvme+tcp://[::1]:8009/,hfi=1,nqn=nqn.2014-08.org.nvmexpress.discovery" && \
	  $(PY) nvmet-harness/vm/runner.py --acpitable .build/NBFT --timeout 1200 -- $(PY) -m pytest -q -p no:cacheprovider tests/kernel/test_nbft_kernel.py || rc=1; \
	fi; exit $$rc

# The seed document's workflow on the real kernel: install, nvmet, stafd + stacd, unlink/link,
# restarts, clean; PASS/FAIL per step.
integration: $(STAMP)
	@reason=$$($(PY) nvmet-harness/vm/runner.py --check) || { echo "SKIP: make integration: $$reason"; exit 0; }; \
	$(PY) nvmet-harness/vm/runner.py -- $(PY) nvmet-harness/integration.py

clean:
	rm -rf .build .pytest_cache .ruff_cache .coverage .coverage.*

# Packaging: PREFIX (default /usr), SYSCONFDIR (/etc), DESTDIR (staging root).
PREFIX     ?= /usr
SYSCONFDIR ?= /etc
.PHONY: install uninstall
install: $(STAMP) man
	@$(PY) scripts/install.py install --destdir "$(DESTDIR)" --prefix "$(PREFIX)" --sysconfdir "$(SYSCONFDIR)"

uninstall: $(STAMP)
	@$(PY) scripts/install.py uninstall --destdir "$(DESTDIR)" --prefix "$(PREFIX)" --sysconfdir "$(SYSCONFDIR)"

.PHONY: man
man: $(STAMP)
	@$(PY) scripts/mkman.py
