# kmmap — build kmmap.ko for each pinned kernel and prove it in QEMU.
#
#   make vmtests     boot every pinned cell and run the guest suite
#   make test        everything: vet, the harness's own tests and the vmtests
#   make shell KERNEL=<cell>  boot one cell with the module loaded, shell on
#                    this terminal (KMMAP_GDB=1: halted, with QEMU's gdb stub)
#   make coverage    the guest suite on the cells that profile the module
#                    (gcov): coverage/kmod.info and coverage/html/index.html
#   make mutants     each mutant of internal/kmmap/mutants/ against the guest suite;
#                    writes MUTANTS.md (MUTANTS=<dir>: your own list)
#   make bench       measure make test warm, boots, the matrix, the edit loop
#                    and zero copy against copies; writes BENCHMARKS.md (each
#                    block says what it took). PARTS=cold: make test with every
#                    cache empty, a fresh machine's CI (about an hour)
#   make kernels     download, verify and unpack the pinned kernels, and
#                    build the debug and KCSAN kernels (no deadline)
#   make toolchains  create the per-suite build roots (no root needed; the
#                    tests make them on first use too)
#   make deps        install (as root) or name (otherwise) the packages needed;
#                    the only step that needs root, and only to install
#
# KMMAP_CELLS=6.1-amd64 limits the cells; KMMAP_CACHE moves the cache.
# Test output is one line per cell and the output of what failed; V=1
# shows everything.

# Nothing a recipe starts outlives make, however make ends (a CI runner's
# SIGTERM, a kill): each recipe's shell, and each go command in it, gets
# the parent-death signal from util-linux's setpriv; the test binaries,
# kmmap and the guests and builds they start tie themselves in turn
# (internal/lifeline).
# (Without setpriv, make deps says which package has it.)
ifneq ($(shell command -v setpriv),)
TIED        := setpriv --pdeathsig KILL --
SHELL       := setpriv
.SHELLFLAGS := --pdeathsig KILL -- bash -o pipefail -c
else
SHELL       := bash
.SHELLFLAGS := -o pipefail -c
endif

GO      ?= go
GOFLAGS ?=
# go test's deadline, sized for the cold path: on an empty cache the run
# also downloads every kernel and builds the four debug and KCSAN kernels
# from source, one at a time (see README, "How long"). A warm run takes
# minutes; a cell whose kernel would not be built before the deadline
# fails at once saying how to build it first (make kernels).
TIMEOUT ?= 85m

# command -> Debian package that provides it
TOOLS := \
	make:make \
	setpriv:util-linux \
	perl:perl \
	xz:xz-utils \
	tar:tar \
	sparse:sparse \
	gcc-12:gcc-12 \
	aarch64-linux-gnu-gcc-12:gcc-12-aarch64-linux-gnu \
	gcc:gcc \
	aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu \
	i686-linux-gnu-gcc:gcc-i686-linux-gnu \
	arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf \
	qemu-system-x86_64:qemu-system-x86 \
	qemu-system-aarch64:qemu-system-arm \
	qemu-system-ppc64:qemu-system-ppc \
	qemu-system-s390x:qemu-system-misc \
	qemu-system-riscv64:qemu-system-misc \
	powerpc64le-linux-gnu-gcc:gcc-powerpc64le-linux-gnu \
	s390x-linux-gnu-gcc:gcc-s390x-linux-gnu \
	riscv64-linux-gnu-gcc:gcc-riscv64-linux-gnu \
	gdb-multiarch:gdb-multiarch \
	genhtml:lcov \
	pahole:dwarves
# files -> package: firmware QEMU loads for x86, and what creates the
# per-suite toolchain roots as a normal user (mmdebstrap --mode=unshare maps
# the user's subordinate ids with newuidmap)
FILES := \
	/usr/share/seabios/bios-256k.bin:seabios \
	/usr/share/qemu/qboot.rom:qemu-system-data \
	/usr/bin/mmdebstrap:mmdebstrap \
	/sbin/mke2fs:e2fsprogs \
	/usr/bin/newuidmap:uidmap \
	/usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring \
	/usr/lib/x86_64-linux-gnu/libc.a:libc6-dev \
	/usr/aarch64-linux-gnu/lib/libc.a:libc6-dev-arm64-cross \
	/usr/i686-linux-gnu/lib/libc.a:libc6-dev-i386-cross \
	/usr/arm-linux-gnueabihf/lib/libc.a:libc6-dev-armhf-cross \
	/usr/powerpc64le-linux-gnu/lib/libc.a:libc6-dev-ppc64el-cross \
	/usr/s390x-linux-gnu/lib/libc.a:libc6-dev-s390x-cross \
	/usr/riscv64-linux-gnu/lib/libc.a:libc6-dev-riscv64-cross \
	/usr/share/qemu/slof.bin:qemu-system-data

.PHONY: all deps vmtests test vet kernels toolchains shell run bench coverage mutants

# go test -json, read by `kmmap report`: a line per cell and per package.
REPORT = $(GO) run ./cmd/kmmap report $(if $(V),-v)

all: test

deps:
	@missing=""; \
	for t in $(TOOLS); do \
		command -v "$${t%%:*}" >/dev/null 2>&1 || missing="$$missing $${t#*:}"; \
	done; \
	for f in $(FILES); do \
		[ -e "$${f%%:*}" ] || missing="$$missing $${f#*:}"; \
	done; \
	command -v $(GO) >/dev/null 2>&1 || { echo "go not found: install Go 1.26 or newer (https://go.dev/dl)"; exit 1; }; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing:$$missing"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing ipxe-qemu || exit 1; \
		else \
			echo "missing:$$missing"; \
			echo "install with: sudo apt-get install --no-install-recommends$$missing ipxe-qemu"; \
			exit 1; \
		fi; \
	fi

kernels: deps
	$(GO) run ./cmd/kmmap kernels fetch

toolchains: deps
	$(GO) run ./cmd/kmmap kernels toolchains

vet:
	@unformatted=$$("$$($(GO) env GOROOT)/bin/gofmt" -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "not gofmt-clean (run gofmt -w on them):"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags kmmap_guest ./vmtests/guest

# The main job: every pinned cell, guest tests as TestGuest/<cell>/<test>;
# cells marked extra in the lock too, unless KMMAP_CELLS says otherwise
# (make test leaves them out: its time budget).
vmtests: deps
	KMMAP_CELLS=$${KMMAP_CELLS:-all} $(TIED) $(GO) test $(GOFLAGS) -json -count=1 -timeout $(TIMEOUT) -run '^TestGuest$$' ./vmtests | $(REPORT)

# Your own command in a cell, the working directory shared (kmmap run):
# make run KERNEL=<cell> CMD='./repro arg', or CELLS=<cell,cell|all>.
run: deps
	@if [ -z "$(CMD)" ] || [ -z "$(KERNEL)$(CELLS)" ]; then \
		echo "usage: make run KERNEL=<cell> CMD='<command>'  (or CELLS=<cell,cell|all>; NO_MODULE=1, TIMEOUT_RUN=2m)"; exit 2; \
	fi
	$(TIED) $(GO) run ./cmd/kmmap run $(if $(CELLS),--cells $(CELLS),$(KERNEL)) $(if $(NO_MODULE),--no-module) $(if $(TIMEOUT_RUN),--timeout $(TIMEOUT_RUN)) --dir "$(or $(DIR),$(CURDIR))" -- $(CMD)

# One cell, interactively: KERNEL=<cell id> (see `go run ./cmd/kmmap kernels
# list`), or KERNEL=custom with KMMAP_KERNEL and KMMAP_KDIR.
shell: deps
	@if [ -z "$(KERNEL)" ]; then \
		echo "usage: make shell KERNEL=<cell>, one of:"; $(TIED) $(GO) run ./cmd/kmmap kernels list | cut -d' ' -f1 | sed 's/^/    /'; \
		echo "or KERNEL=custom with KMMAP_KERNEL=<image> KMMAP_KDIR=<kbuild tree>"; exit 2; \
	fi
	$(TIED) $(GO) run ./cmd/kmmap shell --dir "$(or $(DIR),$(CURDIR))" $(KERNEL)

# Everything CI runs: vet, the harness's own tests, and the vmtests; never
# a cached result (-count=1): the point is to boot the kernels.
test: deps vet
	$(TIED) $(GO) test $(GOFLAGS) -json -count=1 -timeout $(TIMEOUT) ./... | $(REPORT)

# Module coverage: the debug cells (CONFIG_GCOV_KERNEL) run the suite and
# leave their counters as results/<cell>/kmod.info; then merged and drawn.
coverage: deps
	cells=$$($(TIED) $(GO) run ./cmd/kmmap coverage cells) && \
	KMMAP_CELLS=$$cells $(TIED) $(GO) test $(GOFLAGS) -json -count=1 -timeout $(TIMEOUT) -run '^TestGuest$$' ./vmtests | $(REPORT)
	$(TIED) $(GO) run ./cmd/kmmap coverage report

# Mutation testing of kmod/ against the guest suite; MUTANTS=<dir> runs
# another list (its table goes to stdout, MUTANTS.md is left alone).
MUTANTS ?=
mutants: deps
	$(TIED) $(GO) run ./cmd/kmmap mutate $(if $(MUTANTS),-mutants $(MUTANTS),-o MUTANTS.md)

# Benchmarks, not tests: nothing fails because the machine is slow.
PARTS ?=
bench: deps
	$(TIED) $(GO) run ./cmd/kmmap bench $(if $(PARTS),-parts $(PARTS))
