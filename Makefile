# brokerport — run `make help` for the targets.
GO      ?= go
IMAGE   ?= ghcr.io/brokerport/brokerport:dev
BIN     := bin/brokerport

.DEFAULT_GOAL := help
.PHONY: help build test golden lint fuzz bench demo demo-down render-examples e2e e2e-tools kcat docker-build ci

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/brokerport
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/brokerport

test: ## run every test with the race detector (and, in their own modules, the CEL check of the binding matchConditions and the Helm chart against the manifests)
	$(GO) test -race -count=1 ./...
	cd webhook/matchconditions/celcheck && $(GO) test -count=1 ./...
	cd manifests/chart/charttest && $(GO) test -count=1 ./...

golden: ## regenerate the golden files from the current code; review the diff before committing
	$(GO) test ./webhook -run TestGolden -update

lint: ## go vet (end-to-end code included) and a gofmt check
	$(GO) vet ./...
	$(GO) vet -tags e2e,scale ./test/...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# A count, not a duration: with -fuzztime=<duration>, Go 1.26's fuzz coordinator can fail a run
# with a bare "context deadline exceeded" at the deadline, with no crasher (golang/go#75804, fixed
# in Go 1.27). 100,000 executions take about 10-25 s per fuzzer on 2 cores.
FUZZTIME ?= 100000x
fuzz: ## run each fuzzer for FUZZTIME (100000x, about 20 s each)
	@for f in FuzzParseConfig FuzzMutatePod FuzzMutateStatefulSet FuzzMutateService FuzzHostTemplate FuzzHostURI FuzzPlanServices; do \
	  echo ">> $$f"; $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./patches || exit 1; done
	@for f in FuzzServeHTTP FuzzDirectPatch FuzzDecode; do \
	  echo ">> $$f"; $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./webhook || exit 1; done

bench: ## handler benchmarks, the load harness and informer memory; rewrites BENCHMARKS.md
	test/load/bench.sh > BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md && cat BENCHMARKS.md

demo: ## run brokerport on a local control plane (4 kwok nodes) and print the brokers' addresses; stays up
	$(GO) run ./test/demo

demo-down: ## stop the demo cluster
	$(GO) run ./test/demo down

render-examples: build ## show, offline, what brokerport does to the example Redpanda and Kafka StatefulSets
	$(BIN) render -f examples/redpanda.yaml
	$(BIN) render -f examples/kafka.yaml

e2e-tools: ## build (or find cached) kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok
	@test/tools/build.sh >/dev/null

kcat: ## install kcat (the e2e suite's second Kafka client) from Debian's packages if it is missing
	@command -v kcat >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; \
	  else echo "kcat is missing: run  sudo apt-get install -y kcat  (or make kcat as root)"; exit 1; fi; }

e2e: e2e-tools kcat ## the end-to-end suite on a real control plane (builds it from Go modules the first time)
	BROKERPORT_E2E_BIN=$$(test/tools/build.sh) $(GO) test -tags e2e -count=1 -timeout 40m -v ./test/e2e

docker-build: ## build the image (needs a Docker engine)
	docker build -t $(IMAGE) .

ci: lint test fuzz e2e ## what .ci/run runs
