# pxed: set-up, run and test. `make run IFACE=eth0` and `make test` are the two commands a
# newcomer needs (see README.md).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
IFACE  ?= eth0
ARGS   ?=

# Debian packages of the real clients, peers and firmware the tests drive.
TEST_DEBS := python3-venv iproute2 tcpdump curl isc-dhcp-client busybox udhcpc kea-admin \
             kea-dhcp4-server dnsmasq-base atftp atftpd tftp-hpa \
             qemu-system-x86 ipxe-qemu ovmf qemu-system-arm qemu-efi-aarch64 pxelinux syslinux-common nftables ipxe \
             chromium-headless-shell fonts-dejavu-core strace systemd postgresql

.PHONY: run test lint unit deps-debian venv clean

# Debian ships venv's ensurepip in python3-venv: without it `python3 -m venv` stops with a
# message that does not say so. `make test` installs it (TEST_DEBS); `make run` says what.
VENV_MISSING := pxed: python3 -m venv needs the Debian package python3-venv: apt-get install python3-venv

$(BIN)/pxed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { echo "$(VENV_MISSING)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

venv: $(BIN)/pxed

## Install pxed into .venv and run it in the foreground on IFACE (needs root for ports 67/69).
run: venv
	$(BIN)/pxed --iface $(IFACE) $(ARGS)

## Install only the Debian packages that are missing (apt-get update only when needed).
## arm64 is added as a foreign architecture so that the arm64 boot test (and pxed stage
## --arch arm64) can apt-get download Debian's arm64 shim, GRUB and kernel; nothing of it is
## installed.
deps-debian:
	@update=""; if ! dpkg --print-foreign-architectures | grep -qx arm64; then \
	  echo "dpkg --add-architecture arm64 (for apt-get download of arm64 boot files)"; \
	  dpkg --add-architecture arm64; update=1; \
	fi; \
	missing=""; for p in $(TEST_DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ] || [ -n "$$update" ]; then apt-get update -q; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

lint: venv
	$(BIN)/ruff check pxed tests bench examples
	$(BIN)/mypy --strict pxed examples

unit: venv
	$(BIN)/pytest -q tests/unit

## Everything the tests need, then the whole suite: lint, unit, integration (namespaces), e2e.
test: deps-debian venv lint
	$(BIN)/pytest -q -ra tests

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
