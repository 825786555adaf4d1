# forgeflow — every command a developer or CI needs. `make test` is the one CI runs.

GO          ?= go
BIN         := $(CURDIR)/bin
STATICCHECK := $(BIN)/staticcheck
STATICCHECK_VERSION := v0.8.2
FUZZTIME    ?= 10s
BENCHTIME   ?= 1s
ADDR_FLAGS  ?=

.PHONY: all run build build-static test test-go test-short load lint fuzz bench frontend frontend-test clean test-cuda test-cuda-build test-cuda-emu

all: build

# The server with the editor, on http://127.0.0.1:8188 (works with no model files).
run: build
	$(BIN)/forgeflow serve $(ADDR_FLAGS)

# The one binary: no cgo. The CUDA backend (gpu/cuda, loaded at run time with purego)
# makes it link glibc's loader dynamically (codex/decisions.md); it runs on any glibc
# Linux, with or without a GPU.
build: frontend
	CGO_ENABLED=0 $(GO) build -o $(BIN)/forgeflow ./cmd/forgeflow

# A fully static binary without the CUDA backend (for scratch or musl/Alpine images):
# bin/forgeflow-static, CPU only.
build-static: frontend
	CGO_ENABLED=0 $(GO) build -tags nocuda -o $(BIN)/forgeflow-static ./cmd/forgeflow

# Everything: lint, unit + integration tests, the load test, short fuzz runs, the
# editor's tests.
test: lint test-go load fuzz frontend-test

# Unit tests and, behind the integration build tag, the end-to-end suites: the CLI and
# the server over a real engine, the workflow folders, the golden suite against a
# renamed copy of the golden set (codex/testing.md).
test-go:
	$(GO) test -tags integration -timeout 25m -skip '^TestLoad$$' ./...

# The server's load test (1,000 prompts from 50 websocket clients), run on its own so
# that its throughput is printed; the figure is not asserted.
load:
	@log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	if $(GO) test -tags integration -count=1 -run '^TestLoad$$' -v ./server/ >$$log 2>&1; then \
		grep -E 'throughput|^ok' $$log; \
	else cat $$log; exit 1; fi

# The quick loop while editing: unit tests only (no integration tag; -short drops the
# heavy cases and would skip the end-to-end suites too).
test-short:
	$(GO) test -short ./...

$(STATICCHECK):
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(STATICCHECK) -tags integration ./...

# Runs every Fuzz target of the module for FUZZTIME each (seed corpora always run in
# test-go); tools/fuzz.sh says how it tells Go's fuzz-coordinator flakes from findings.
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) tools/fuzz.sh

bench:
	$(GO) test -run='^$$' -bench=. -benchtime=$(BENCHTIME) ./...

# On a machine with a CUDA device: builds, runs the op table on the device, the GPU-vs-CPU
# image check and the benchmarks; report in bin/cuda/report/report.md (tools/cuda/test-cuda.sh).
test-cuda:
	bash tools/cuda/test-cuda.sh

# The same op table and image check without a GPU, on a fake libcuda that runs the kernels on the CPU (needs g++).
test-cuda-emu:
	bash tools/cuda/emu.sh

# The binaries test-cuda runs, for a device machine without Go: then `tools/cuda/test-cuda.sh run` there.
test-cuda-build:
	bash tools/cuda/test-cuda.sh build

# The editor (frontend/, an npm workspace of the root package.json, one lock file at
# the root) is built with npm when it exists.
frontend:
	@if [ -f frontend/package.json ]; then npm ci --no-audit --no-fund && npm run build --workspace frontend; fi

# Unit tests, then the end-to-end suite (builds the editor and a forgeflow binary, drives
# Debian's /usr/bin/chromium; no browser is downloaded).
frontend-test:
	@if [ -f frontend/package.json ]; then npm ci --no-audit --no-fund && npm test --workspace frontend; fi

clean:
	rm -rf $(BIN)
