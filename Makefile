# servo: the two commands a new user needs are `make serve` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.servo-installed
REST_PORT ?= 8501
GRPC_PORT ?= 8500
# Loopback only: anyone who reaches the ports may use every API (README, Security).
BIND_ADDRESS ?= 127.0.0.1
# `make serve-sharded`: the front's ports, and its shards' (shard 0 first).
SHARDED_GRPC_PORT ?= 8600
SHARDED_REST_PORT ?= 8601
SHARD_GRPC_PORTS ?= 8610,8611,8612
SHARD_REST_PORTS ?= 8620,8621,8622
PYTEST_ARGS ?=
# Debian's packages (wrk, HAProxy) are installed with apt-get, through sudo unless root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all venv serve serve-sharded test lint unit examples protos bench replicas debian-packages clean
MODELS := examples/models/models.config

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

# Reinstall only when the project's metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

# The example model repository (git-ignored), written from code by the script.
$(MODELS): scripts/make_example_models.py | $(STAMP)
	$(BIN)/python scripts/make_example_models.py

examples: $(MODELS)

serve: $(STAMP) $(MODELS)
	@echo "servo: gRPC on port $(GRPC_PORT), REST on port $(REST_PORT). Try:"
	@echo "  curl -d '{\"instances\": [1.0, 2.0, 5.0]}' localhost:$(REST_PORT)/v1/models/half_plus_two:predict"
	@echo "  curl -d '{\"instances\": [[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]]}' localhost:$(REST_PORT)/v1/models/mlp:predict"
	@echo "  curl -d '{\"instances\": [\"servo\", \"unknown\"]}' localhost:$(REST_PORT)/v1/models/vocab:predict"
	@echo "  curl -d '{\"instances\": [\"a model server\"]}' localhost:$(REST_PORT)/v1/models/word_count:predict"
	@echo "  curl -d '{\"instances\": [\"a model server\", \"servo serves\"]}' localhost:$(REST_PORT)/v1/models/whitespace_tokenizer:predict"
	@echo "  curl -d '{\"instances\": [{\"x1\": 0.9, \"x2\": 0.8}, {\"x1\": 0.1, \"x2\": 0.2}]}' localhost:$(REST_PORT)/v1/models/decision_forest:predict"
	@echo "  curl -d '{\"instances\": [[\"servo\", \"serves\", \"a\", \"model\"], [\"the\", \"unknown\", \"<pad>\", \"<pad>\"]]}' localhost:$(REST_PORT)/v1/models/text_classifier_pipeline:predict"
	@echo "  curl localhost:$(REST_PORT)/v1/models/half_plus_two"
	@echo "  curl localhost:$(REST_PORT)/v1/models/half_plus_two/metadata"
	@echo "  curl -d '{\"inputs\": [{\"name\": \"x\", \"shape\": [3, 1], \"datatype\": \"FP32\", \"data\": [1, 2, 5]}]}' localhost:$(REST_PORT)/v2/models/half_plus_two/infer"
	@echo "  curl localhost:$(REST_PORT)/v2/health/ready"
	@echo "  curl localhost:$(REST_PORT)/monitoring/prometheus/metrics"
	$(BIN)/servo serve --bind_address=$(BIND_ADDRESS) --port=$(GRPC_PORT) \
		--rest_api_port=$(REST_PORT) --model_config_file=$(MODELS) \
		--monitoring_config_file=examples/monitoring.config

# The example embedding table split into 3 shards, each served by a servo of its own, and the
# front that fans keys out to them, in the foreground; Ctrl-C stops the front and the shards.
serve-sharded: $(STAMP) $(MODELS)
	$(BIN)/python scripts/serve_sharded.py --bind-address=$(BIND_ADDRESS) \
		--grpc-port=$(SHARDED_GRPC_PORT) --rest-port=$(SHARDED_REST_PORT) \
		--shard-grpc-ports=$(SHARD_GRPC_PORTS) --shard-rest-ports=$(SHARD_REST_PORTS)

# Benchmarks (loopback only, bounded in time); wrk comes from Debian's packages, KServe (the
# Python server compared against) into a venv of its own, as it is no dependency of servo.
KSERVE_VENV := .venv-kserve
$(KSERVE_VENV)/bin/python:
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet kserve onnxruntime numpy

bench: $(STAMP) $(KSERVE_VENV)/bin/python
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
	$(BIN)/python bench/rest_predict.py --kserve-python $(KSERVE_VENV)/bin/python
	$(BIN)/python bench/grpc_predict.py
	$(BIN)/python bench/open_inference.py
	$(BIN)/python bench/batching.py

# 3 replicas polling one bucket (moto's S3 server) behind HAProxy, 10 versions pushed and one
# deleted under REST and gRPC load: requests sent and failed, time to converge per push.
replicas: $(STAMP) debian-packages
	$(BIN)/python bench/replicas.py

# The official Open Inference Protocol client (tritonclient) for the tests, in a venv of its
# own: it pins protobuf and ml-dtypes below what servo needs. The tests drive it as a process.
TRITON_VENV := .venv-triton
$(TRITON_VENV)/.installed:
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet 'tritonclient[http,grpc]>=2.40' numpy
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples scripts
	$(BIN)/ruff format --check src tests bench examples scripts
	$(BIN)/mypy

# Debian's packages the suite drives: HAProxy, the load balancer in front of the replicas;
# Prometheus, which runs the Grafana dashboard's queries (tests/integration/test_dashboard.py).
debian-packages:
	@command -v haproxy >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq haproxy; }
	@command -v prometheus >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq prometheus; }

unit: $(STAMP) $(TRITON_VENV)/.installed debian-packages
	SERVO_TRITON_PYTHON=$(CURDIR)/$(TRITON_VENV)/bin/python $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint unit

# Regenerates src/servo/protos/*_pb2.py(i) from the .proto files (a test fails when stale).
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) $(TRITON_VENV) .pytest_cache .ruff_cache .mypy_cache build src/*.egg-info
