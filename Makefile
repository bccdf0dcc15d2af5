# Two commands do all the set-up on a fresh Debian machine, as root: `make demo` and `make test`.
PYTHON ?= python3
PREFIX ?= /usr/local
APT_PACKAGES := busybox-static runc crun hyperfine libseccomp2 gcc libc6-dev binutils time
PYTEST_ARGS ?=

.PHONY: all examples deps apt-deps pip-deps fuzz-deps launchers install uninstall test lint demo bench bench-engines bench-shim clean pal fuzz kube deb rpm

all: launchers

# Debian packages: installed only when one is missing.
apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The package (editable) with its test extras: installed only when missing.
pip-deps:
	@$(PYTHON) -c "import inclavare, pytest, cryptography, hypothesis, dcap_qvl, regopy, cbor2, jwcrypto, rfc8785, grpc, google.protobuf, grpc_tools, tomlkit, yaml, kubernetes_validate, jeepney" 2>/dev/null && \
		$(PYTHON) -c "import inclavare,sys; sys.exit(0 if inclavare.__file__.startswith('$(CURDIR)/src') else 1)" || \
		$(PYTHON) -m pip install -q -e '.[test]'

deps: apt-deps pip-deps

# bin/rune: a launcher that starts the interpreter isolated (-I) and without site (-S), so that rune's start-up
# costs only what it imports itself. It works when a daemon calls it by absolute path with an empty environment.
launchers: pip-deps
	@$(PYTHON) -m inclavare.launcher bin

# make install: the package itself (a wheel built from this checkout, not the checkout) with the dependencies of its
# extras in a private environment, $(PREFIX)/lib/inclavare-containers/venv, and the launchers in $(PREFIX)/bin naming
# it; engines configured with $(PREFIX)/bin/rune keep working when the checkout moves. The environment's interpreter
# is the system's python3 (built with PGO and LTO: rune starts faster on it) or INSTALL_PYTHON. INSTALL_EXTRAS=tee,k8s picks
# the extras (default: all but test and fuzz; empty: the standard-library-only core). `make uninstall` removes both.
install:
	@$(PYTHON) packaging/build.py install $(PREFIX) $(DESTDIR)

uninstall:
	@for c in $$($(PYTHON) -c "import sys; sys.path.insert(0, 'src'); from inclavare.launcher import LAUNCHERS; print(*LAUNCHERS)"); do \
		grep -qs "$(PREFIX)/lib/inclavare-containers/venv" $(DESTDIR)$(PREFIX)/bin/$$c && rm -f $(DESTDIR)$(PREFIX)/bin/$$c; done; \
	rm -rf $(DESTDIR)$(PREFIX)/lib/inclavare-containers

test: deps launchers pal
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# The fuzzers for a given time (FUZZ_SECONDS for hypothesis over config.json and argv through the real rune,
# ATHERIS_SECONDS for each coverage-guided atheris target), then a report; defects are saved to tests/fuzz/cases/.
FUZZ_SECONDS ?= 600
ATHERIS_SECONDS ?= 120
fuzz: deps launchers fuzz-deps
	$(PYTHON) fuzz/run.py --seconds $(FUZZ_SECONDS) --atheris-seconds $(ATHERIS_SECONDS)

# atheris has wheels for the common Pythons; elsewhere it builds against clang's libFuzzer (Debian's clang).
# `make test` does not need it.
fuzz-deps:
	@$(PYTHON) -c "import hypothesis" 2>/dev/null || $(PYTHON) -m pip install -q 'hypothesis>=6.80'
	@$(PYTHON) -c "import atheris" 2>/dev/null || $(PYTHON) -m pip install -q 'atheris>=2.3' || { \
		dpkg -s clang libfuzzer-dev >/dev/null 2>&1 || { apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libfuzzer-dev >/dev/null; }; \
		CLANG_BIN=$$(command -v clang) $(PYTHON) -m pip install -q --no-binary atheris 'atheris>=2.3'; }

# The example services' images (examples/, docs/languages.md), built from this machine's Debian packages and cached
# under build/examples; tests/e2e builds them itself when they are missing. Needs only the Debian packages (the builder
# finds the package's sources itself).
EXAMPLES ?= python-web go-web java-web
EXAMPLE_APT_PACKAGES := python3.11-minimal libpython3.11-stdlib openjdk-17-jre-headless openjdk-17-jdk-headless
examples:
	@$(MAKE) -s apt-deps APT_PACKAGES="$(EXAMPLE_APT_PACKAGES)"
	$(PYTHON) examples/imagebuild.py $(EXAMPLES)

lint:
	$(PYTHON) -m ruff check src tests bench examples

demo: deps launchers pal
	@PYTHON=$(PYTHON) bash demo/demo.sh

bench: deps launchers
	$(PYTHON) bench/rune_vs_runc.py

# ctr/docker/podman run --rm with rune vs runc (starts its own containerd and dockerd, stops them by PID)
bench-engines: deps launchers
	$(PYTHON) bench/engines.py

# ctr run --rm and memory per pod through containerd-shim-rune-v2 vs containerd-shim-runc-v2, and the enclave
# conversion's cost (starts its own containerd, stops it by PID)
bench-shim: deps launchers
	$(PYTHON) bench/shim.py

# The reference enclave runtime (PAL API v1, v2, v3 from one source), built with the system C compiler.
CC ?= cc
PAL_LIBS := build/pal/liberpal-skeleton-v1.so build/pal/liberpal-skeleton-v2.so build/pal/liberpal-skeleton-v3.so
pal: $(PAL_LIBS)
build/pal/liberpal-skeleton-v%.so: pal/skeleton.c
	@mkdir -p build/pal
	$(CC) -O2 -Wall -Wextra -fPIC -shared -DPAL_VERSION=$* -o $@ $< -lpthread

# The real Kubernetes of tests/k8s and bench/k8s.py, built once from its Go modules and cached under build/ by
# version: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl from k8s.io/kubernetes
# (tools/kubernetes/go.mod), crictl from sigs.k8s.io/cri-tools (tools/cri-tools/go.mod), and etcd from Debian's
# etcd-server package, unpacked here rather than installed (installing it would start a system etcd).
# Stripped and without debug info (-s -w), with -trimpath: about 5 minutes cold on 2 cores (see docs/kubernetes.md).
GO ?= go
GO_BUILD = $(GO) build -trimpath -buildvcs=false -ldflags='-s -w'
KUBE_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2}' tools/kubernetes/go.mod)
CRICTL_VERSION := $(shell awk '$$1 == "sigs.k8s.io/cri-tools" {print $$2}' tools/cri-tools/go.mod)
# keyed by the version and the go.sum that pins every module (not by file times, which a checkout resets)
KUBE_DIR := build/kubernetes/$(KUBE_VERSION)-$(shell sha256sum tools/kubernetes/go.sum | cut -c1-12)
CRICTL_DIR := build/cri-tools/$(CRICTL_VERSION)-$(shell sha256sum tools/cri-tools/go.sum | cut -c1-12)
kube: $(KUBE_DIR)/.built $(CRICTL_DIR)/crictl build/etcd/etcd
$(KUBE_DIR)/.built:
	@mkdir -p $(KUBE_DIR)
	cd tools/kubernetes && $(GO_BUILD) -o $(CURDIR)/$(KUBE_DIR)/ tool
	@touch $@
$(CRICTL_DIR)/crictl:
	@mkdir -p $(CRICTL_DIR)
	cd tools/cri-tools && $(GO_BUILD) -o $(CURDIR)/$(CRICTL_DIR)/ tool
build/etcd/etcd:
	@rm -rf build/etcd && mkdir -p build/etcd
	cd build/etcd && { apt-get download etcd-server 2>/dev/null || { apt-get update -qq && apt-get download etcd-server; }; } \
		&& dpkg-deb -x etcd-server_*.deb deb && ln -s deb/usr/bin/etcd etcd

# The package (packaging/build.py): rune, the shim, sgx-tools, the device plugin (and verdictd) with their Python
# dependencies in a private environment, systemd units and the default /etc/inclavare-containers/config.toml.
deb:
	@command -v dpkg-deb >/dev/null || { apt-get update -qq && apt-get install -y -qq dpkg-dev >/dev/null; }
	$(PYTHON) packaging/build.py deb
rpm:
	@command -v rpmbuild >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm >/dev/null; }
	$(PYTHON) packaging/build.py rpm

clean:
	rm -rf bin build .pytest_cache
