# Every target creates or refreshes .venv and installs what it needs: a fresh Debian machine
# with Python 3.11 needs nothing else.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-16)

.PHONY: venv demo test test-fast test-slow bench lint clean sim-accel sysdeps workloads interop-deps image chaos chaos-deps

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || PYTHON=python3; \
	  test -x $(PY) || $${PYTHON:-$(PYTHON)} -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,plot]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

demo: $(STAMP) sysdeps
	$(VENV)/bin/enclave-swarm demo --nodes 8

# Everything but the suites marked slow (kept under 10 minutes on 2 cores). Two pytest workers:
# most tests are one busy interpreter each; the tests that start node processes all run on one
# worker, one at a time (tests/conftest.py), so that at most one such federation runs at once.
XDIST  ?= -n 2 --dist loadgroup
test: $(STAMP) sysdeps chaos-deps interop-deps
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider $(XDIST)

# The long suites (many seeds, big files); CI runs them after `make test`. One worker: these
# hold 200 MiB transfers with an RSS bound, the mypyc build and 7-process federations, which
# two workers would run side by side on two cores (measured: 15 min and 3 timeouts with two
# workers, against 9 min and none with one).
test-slow: $(STAMP) chaos-deps
	$(PY) -m pytest -q -m slow -p no:cacheprovider

# System tools the suite needs: tests/node/test_netns_mdns.py builds network namespaces with
# `ip` (iproute2), which slim Debian images lack; tests/telemetry/test_prometheus_scrape.py runs
# Debian's Prometheus server and promtool (package prometheus, 2.42 on Debian 12; without its
# recommends: no node exporter); tests/keys/ and `make demo` keep node keys in SoftHSM2 tokens
# (softhsm2: softhsm2-util and /usr/lib/softhsm/libsofthsm2.so). Installed when missing on a
# root Debian machine (the project's and CI's); elsewhere the tests say why they fail and the
# demo runs every node on file keys, saying so.
SYSDEPS := $(if $(shell command -v ip),,iproute2) $(if $(shell command -v prometheus),,prometheus) \
           $(if $(and $(shell command -v softhsm2-util),$(wildcard /usr/lib/softhsm/libsofthsm2.so)),,softhsm2)
sysdeps:
	@if [ -n "$(strip $(SYSDEPS))" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(SYSDEPS); \
	fi

# `make chaos`: the seeded chaos scenarios of node/chaos/scenarios.py on node processes in
# network namespaces (root; four scenarios, about 14 minutes on 2 loaded cores). docs/reliability.md. Its tools, installed when missing
# on a root Debian machine: ip/tc (iproute2), nft (nftables: partitions, loss, duplication),
# faketime (libfaketime: clock skew), ping (iputils-ping: the harness's own test).
chaos-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && { ! command -v ip >/dev/null \
	    || ! command -v nft >/dev/null || ! command -v faketime >/dev/null || ! command -v ping >/dev/null; }; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    iproute2 nftables faketime iputils-ping; \
	fi

chaos: $(STAMP) chaos-deps
	$(PY) -m node.chaos.scenarios

# The js-libp2p peer of tests/overlay/test_js_interop.py: Node.js and npm from Debian (Node 18 on
# Debian 12; the pinned js-libp2p runs on 18 and later) when `node` is missing on a root Debian
# machine, then the exact packages of tests/interop/js/package-lock.json (`npm ci`), again only
# when the lock changed (the stamp in node_modules names its hash). Elsewhere install Node >= 18
# and npm yourself; the tests fail, naming this target, while node or the packages are missing.
JS_INTEROP := tests/interop/js
JS_STAMP    = $(JS_INTEROP)/node_modules/.installed-$(shell sha256sum $(JS_INTEROP)/package-lock.json | cut -c1-16)
interop-deps:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm ca-certificates; \
	  else echo "interop-deps: install Node.js (>= 18) and npm, then run make again" >&2; exit 1; fi; \
	fi
	@test -f $(JS_STAMP) || { (cd $(JS_INTEROP) && npm ci --no-audit --no-fund) && touch $(JS_STAMP); }

# Quick inner loop for developers: no separate processes, nothing slow.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not process" -p no:cacheprovider $(XDIST)

bench: $(STAMP)
	$(PY) -m bench

# The simulator's compiled engine (mypyc snapshot of the same sources; ~1 minute of gcc).
# `enclave-swarm sim` uses it automatically while the sources are unchanged.
sim-accel: $(STAMP)
	$(PY) -m sim.accel

# The example workloads (node/workload/examples): C built with clang for wasm32-wasi against
# wasi-libc, WAT assembled by wasmtime; the .wasm files and SHA256SUMS are committed so that
# nothing else needs a compiler. Installs clang, lld and wasi-libc (Debian) when missing.
WORKLOADS := node/workload/examples
WASI_CC   ?= clang
WASI_CFLAGS := --target=wasm32-wasi -O2 -Wall -Wextra -Werror -Wl,--strip-all
workloads: $(STAMP)
	@command -v $(WASI_CC) >/dev/null && command -v wasm-ld >/dev/null \
	  && test -f /usr/lib/wasm32-wasi/libc.a \
	  && test -n "$$(ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a 2>/dev/null)" \
	  || { apt-get update -q \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang lld wasi-libc \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	       "libclang-rt-$$(clang --version | sed -n 's/.*version \([0-9]*\).*/\1/p' | head -n1)-dev-wasm32"; }
	@for src in $(WORKLOADS)/*.c; do \
	  echo "  CC  $$src"; $(WASI_CC) $(WASI_CFLAGS) -o "$${src%.c}.wasm" "$$src" || exit 1; done
	@for src in $(WORKLOADS)/*.wat; do \
	  echo "  WAT $$src"; $(PY) -c 'import sys, wasmtime; open(sys.argv[2], "wb").write(wasmtime.wat2wasm(open(sys.argv[1]).read()))' \
	    "$$src" "$${src%.wat}.wasm" || exit 1; done
	cd $(WORKLOADS) && sha256sum *.wasm > SHA256SUMS

# The node image (deploy/container/Containerfile): a Debian 12 root filesystem made with
# debootstrap, the project's wheels built here, `buildah build` (both stages FROM scratch: no
# container registry needed). Installs buildah and debootstrap (Debian) when missing; needs root
# (debootstrap). CI does not run it. Size and start-up: python -m bench.bench_image.
IMAGE ?= localhost/enclave-swarm:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
image: $(STAMP)
	@command -v buildah >/dev/null && command -v debootstrap >/dev/null \
	  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	       buildah debootstrap; }
	PY=$(PY) deploy/container/build.sh $(IMAGE)

lint: $(STAMP)
	$(VENV)/bin/ruff check node overlay consensus sim tests bench
	$(VENV)/bin/mypy node overlay consensus sim

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
