# The targets a newcomer guesses. `make test` and `make demo` install
# PostgreSQL when it is missing (scripts/ensure-postgres.sh) and run in
# throwaway clusters of their own.

GO      ?= go
PKGS    ?= ./...
BIN     ?= bin/cuesched
DEMO    ?= bin/cuesched-demo

.PHONY: build test demo bench chaos fuzz lint proto postgres

# The binary deployed beside Cuebot; it links nothing of internal/testworld.
# Its version (cuesched version, cuesched_build_info) is git's description of
# the checkout when git is there; without git the binary reads the VCS stamp
# the Go toolchain left, or says dev.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null)
build:
	$(GO) build $(if $(VERSION),-ldflags "-X main.version=$(VERSION)") -o $(BIN) ./cmd/cuesched

postgres:
	@scripts/ensure-postgres.sh

# The default suite: every package, race detector on. The end-to-end tests
# take longest: named first, they start first instead of a third of the way
# through (go test lists a package once). Most packages' tests spend their
# time waiting on PostgreSQL, leases and frames, so more packages run at once
# than there are cores (TESTP).
TESTP ?= 4
test: postgres
	$(GO) test -race -count=1 -p $(TESTP) -timeout 30m $(if $(filter ./...,$(PKGS)),./internal/e2e) $(PKGS)

# The demo is a command of its own: it alone links the test world.
demo: postgres
	$(GO) build -o $(DEMO) ./cmd/cuesched-demo
	$(DEMO)

# Go benchmarks (matching, the host index, sizing), then the measured
# scenarios of BENCHMARKS.md against real PostgreSQL, without the race
# detector. Their figures are in the -v output.
BENCH_TESTS ?= TestBench|TestPropagationDelay|TestProcessTakeover|TestTimeToBook|TestIdleCost|TestTakeoverAfterKill|TestWastedAttempts
bench: postgres
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	CUESCHED_BENCH=1 $(GO) test -count=1 -timeout 90m -v -run '$(BENCH_TESTS)' ./cache ./queue ./dispatch ./ownership ./internal/e2e

# Race tests repeated many more times than the default suite runs them, and
# the tests that book a whole farm at full size (seed.SuiteStress: the peer
# stress farm of 1,200 hosts and 6,000 frames, a quarter of it in the default
# suite), with the end-to-end tests' instances under the race detector too.
chaos: postgres
	CUESCHED_CHAOS=1 $(GO) test -race -count=1 -timeout 60m \
		-run 'Race|Chaos|TestFault|TestSimulatorFaithful|TestPollBehindTransactionPooler|PeerStress|TestRunAsARoleMadeByGrants|TestIdleCPU|TestWastedAttempts|TestHostIndexMatchesBruteForce' $(PKGS)

# Every fuzz target of the module, one after another, FUZZTIME each
# (scripts/fuzz.sh finds them: a new one is never left out; FUZZ=regexp
# picks some). Their committed corpora run in the default suite already.
FUZZTIME ?= 10m
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

# staticcheck is pinned and run by version, so go.mod carries no tool
# dependency; the first run fetches it through the module proxy. gofmt is the
# one of the Go in use and walks the tree itself, so lint needs nothing but Go
# (without git, listing files by git would hand gofmt none and pass unchecked).
GOFMT       ?= $(shell $(GO) env GOROOT)/bin/gofmt
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	@out=$$($(GOFMT) -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

# Regenerates the committed RQD wire code. Needs protoc (Debian: protobuf-compiler)
# and the pinned generators.
proto:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	cd internal/rqd && PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative rqd.proto
