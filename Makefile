# brokerport — run `make help` for the targets.
GO      ?= go
IMAGE   ?= ghcr.io/brokerport/brokerport:dev
BIN     := bin/brokerport

.DEFAULT_GOAL := help
.PHONY: help build test golden lint demo docker-build ci

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/brokerport
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/brokerport

test: ## run every test with the race detector
	$(GO) test -race -count=1 ./...

golden: ## regenerate the golden files from the current code; review the diff before committing
	$(GO) test ./webhook -run TestGolden -update

lint: ## go vet and a gofmt check
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

demo: build ## show what brokerport does to the example Redpanda and Kafka StatefulSets
	$(BIN) render -f examples/redpanda.yaml
	$(BIN) render -f examples/kafka.yaml

docker-build: ## build the image (needs a Docker engine)
	docker build -t $(IMAGE) .

ci: lint test ## what .ci/run runs
