# p2pdma-rig: `make run` runs the probes on the default kernel, `make test` runs the rig's own tests.
# Both install what they need first (Debian packages with apt-get, Python packages into .venv).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=
PYTEST_ARGS ?=

# Everything the rig runs on the host: QEMU, the kernel source and its build tools, the image builder.
DEB_PACKAGES := qemu-system-x86 qemu-utils linux-source-6.12 build-essential flex bison bc \
	libelf-dev libssl-dev cpio kmod xz-utils rsync ccache mmdebstrap e2fsprogs openssh-client python3-venv \
	patch git procps libncurses-dev lz4
# Only `make test` needs these: headless Chromium renders report.html; actionlint runs shellcheck on the
# workflow's `run:` scripts; the kernel's checkpatch.pl checks patches/fixes/ with perl's full module set
# (build-essential brings it through dpkg-dev; named so that nothing relies on that).
TEST_DEB_PACKAGES := chromium shellcheck perl

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test unit bench flaky races qemu-patched captures deps test-deps system-deps test-system-deps apt-install clean-venv help

help:
	@echo "make run    build kernel + image, boot QEMU, run the probes (ARGS='-k mmap' to pass rig options)"
	@echo "make test   the rig's own tests: host unit tests and VM integration tests (JUnit: out/pytest-junit.xml)"
	@echo "make unit   host unit tests only (seconds, no VM)"
	@echo "make bench  measure build/boot/run times into BENCHMARKS.md"
	@echo "make flaky  5 full runs + 5 shuffled runs of the clean kernel into BENCHMARKS.md (flakiness)"
	@echo "make races  time to the first report: aimed race scenarios and planted bugs, into BENCHMARKS.md"
	@echo "make qemu-patched  the installed QEMU's Debian source with patches/qemu/, built for x86_64 (~20 min)"
	@echo "make captures  re-record tests/data/splats/ (one real console per splat pattern; capture kernel, ~20 min cold)"

deps: system-deps $(VENV)/.installed
test-deps: deps test-system-deps

# apt-get only when a package is missing, so a warm machine spends no time here.
system-deps:
	@$(MAKE) -s apt-install PACKAGES="$(DEB_PACKAGES)"
test-system-deps:
	@$(MAKE) -s apt-install PACKAGES="$(TEST_DEB_PACKAGES)"

apt-install:
	@missing=$$(for p in $(PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: deps
	$(BIN)/rig run $(ARGS)

unit: test-deps
	$(BIN)/pytest -m 'not vm' $(PYTEST_ARGS)

test: test-deps
	mkdir -p out
	$(BIN)/pytest -v -rfEsxX --junitxml=out/pytest-junit.xml $(PYTEST_ARGS)

# virtme-ng (PyPI) is what the inner loop is measured against: vng boots the same bzImage side by side
bench: deps
	$(BIN)/pip install -q virtme-ng
	$(BIN)/python -m rig.bench

# five full runs in table order and five shuffled, into BENCHMARKS.md's "Flakiness" section (about 20 min)
flaky: deps
	$(BIN)/python -m rig.bench flakiness

races: deps
	$(BIN)/python -m rig.bench races

# QEMU's NVMe bugs the rig shows (patches/qemu/): Debian's source of the installed version, patched, x86_64 only
QEMU_BUILD_DEB_PACKAGES := dpkg-dev meson ninja-build pkg-config libglib2.0-dev libpixman-1-dev libslirp-dev \
	zlib1g-dev libfdt-dev python3-venv patch
qemu-patched: deps
	@$(MAKE) -s apt-install PACKAGES="$(QEMU_BUILD_DEB_PACKAGES)"
	patches/qemu/build.sh

# one real console per splat pattern of rig/console.py, from the `capture` kernel (LKDTM, UBSAN, KFENCE on top
# of the debug profile); ARGS='bug panic' records only those
captures: deps
	$(BIN)/python tests/data/splats/record.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
