# pxed: set-up, run and test. `make run IFACE=eth0` and `make test` are the two commands a
# newcomer needs (see README.md).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
IFACE  ?= eth0
ARGS   ?=

# Debian packages of the real clients, peers and firmware the tests drive.
TEST_DEBS := iproute2 tcpdump curl isc-dhcp-client busybox udhcpc kea-admin \
             kea-dhcp4-server dnsmasq-base atftp atftpd tftp-hpa \
             qemu-system-x86 ipxe-qemu ovmf pxelinux syslinux-common nftables ipxe \
             chromium-headless-shell fonts-dejavu-core

.PHONY: run test lint unit deps-debian venv clean

$(BIN)/pxed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

venv: $(BIN)/pxed

## Install pxed into .venv and run it in the foreground on IFACE (needs root for ports 67/69).
run: venv
	$(BIN)/pxed --iface $(IFACE) $(ARGS)

## Install only the Debian packages that are missing (apt-get update only when needed).
deps-debian:
	@missing=""; for p in $(TEST_DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
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
