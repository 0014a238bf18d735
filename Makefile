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

.PHONY: all venv serve serve-sharded test lint unit examples protos bench compare compare-batching compare-tools \
	replicas rolling debian-packages \
	container-packages image image-slim container-bases clean
MODELS := examples/models/models.config

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

# Reinstall only when the project's metadata changes. The distribution is servo-model-server;
# a .venv made before it was named so holds an editable `servo` too, removed first.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip uninstall --quiet --yes servo 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

# The example model repository (git-ignored), written from code by the script.
$(MODELS): scripts/make_example_models.py | $(STAMP)
	$(BIN)/python scripts/make_example_models.py

examples: $(MODELS)

# The server in the foreground; its curls to try are printed once it listens (below the load
# logs). Ctrl-C stops it. BIND_ADDRESS, GRPC_PORT and REST_PORT choose where it listens.
serve: $(STAMP) $(MODELS)
	$(BIN)/python scripts/serve_examples.py --bind-address=$(BIND_ADDRESS) \
		--grpc-port=$(GRPC_PORT) --rest-port=$(REST_PORT) --models=$(MODELS) \
		--monitoring-config=examples/monitoring.config

# The example embedding table split into 3 shards, each served by a servo of its own, and the
# front that fans keys out to them, in the foreground; Ctrl-C stops the front and the shards.
serve-sharded: $(STAMP) $(MODELS)
	$(BIN)/python scripts/serve_sharded.py --bind-address=$(BIND_ADDRESS) \
		--grpc-port=$(SHARDED_GRPC_PORT) --rest-port=$(SHARDED_REST_PORT) \
		--shard-grpc-ports=$(SHARD_GRPC_PORTS) --shard-rest-ports=$(SHARD_REST_PORTS)

# Benchmarks (loopback only, bounded in time); wrk comes from Debian's packages, KServe (the
# Python server compared against) into a venv of its own, as it is no dependency of servo (it
# pins a protobuf older than servo's). The tests use its SDK too: KServe's resources' fields,
# for deploy/kserve (tests/support/kserve_schema.py).
KSERVE_VENV := .venv-kserve
$(KSERVE_VENV)/bin/python:
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet "kserve==0.21.*" onnxruntime numpy

bench: $(STAMP) $(KSERVE_VENV)/bin/python
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
	$(BIN)/python bench/rest_predict.py --kserve-python $(KSERVE_VENV)/bin/python
	$(BIN)/python bench/http_stack.py
	$(BIN)/python bench/rest_inprocess.py
	$(BIN)/python bench/send_thread.py
	$(BIN)/python bench/grpc_predict.py
	$(BIN)/python bench/open_inference.py
	$(BIN)/python bench/batching.py
	$(BIN)/python bench/workers.py

# servo against KServe, MLServer, Triton (PyTriton) and the bare ceilings on the example MLP
# (issue 18): the peers are installed by the bench into bench/.venvs/ (git-ignored), wrk and
# h2load from Debian's packages; the table goes to bench/results/compare.md and .png.
# COMPARE_ARGS passes flags on, e.g. COMPARE_ARGS="--servers servo,triton --rounds 1".
COMPARE_ARGS ?=
compare-tools:
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
	@command -v h2load >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nghttp2-client; }

compare: $(STAMP) compare-tools
	$(BIN)/python bench/compare.py $(COMPARE_ARGS)

# The same with the large MLP at 64 connections and each server's own dynamic batching on.
compare-batching: $(STAMP) compare-tools
	$(BIN)/python bench/compare.py --batching $(COMPARE_ARGS)

# 3 replicas polling one bucket (moto's S3 server) behind HAProxy, 10 versions pushed and one
# deleted under REST and gRPC load: requests sent and failed, time to converge per push.
replicas: $(STAMP) debian-packages
	$(BIN)/python bench/replicas.py

# The same replicas rolled one at a time to a new flag under load, as a Deployment rolls:
# requests failed, each replica's drain, HAProxy's retries.
rolling: $(STAMP) debian-packages
	$(BIN)/python bench/rolling.py

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
# Chromium and its driver, the browser the status page is tested in; Prometheus, which runs
# the Grafana dashboard's queries (tests/integration/test_dashboard.py).
# tests/deploy renders the manifests with kubectl's built-in kustomize, which needs kubectl
# 1.21 or later: this project's machines have one (1.32); Debian 12's kubernetes-client is
# 1.20 (kustomize 2.0, which cannot render the overlays), so it is no fallback.
debian-packages:
	@command -v haproxy >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq haproxy; }
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; }
	@command -v prometheus >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq prometheus; }
	@command -v kubectl >/dev/null || { echo "tests/deploy needs kubectl 1.21 or later on PATH" >&2; exit 1; }

unit: $(STAMP) $(TRITON_VENV)/.installed $(KSERVE_VENV)/bin/python debian-packages container-packages
	SERVO_TRITON_PYTHON=$(CURDIR)/$(TRITON_VENV)/bin/python \
		SERVO_KSERVE_PYTHON=$(CURDIR)/$(KSERVE_VENV)/bin/python $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint unit

# Regenerates src/servo/protos/*_pb2.py(i) from the .proto files (a test fails when stale).
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

# Container images (deploy/container/Containerfile), built and run with podman: `make image`
# (TensorFlow included) and `make image-slim` (no TensorFlow). Their two bases are Debian
# bookworm root file systems made by mmdebstrap from Debian's packages and imported, as no
# image registry is used; the build reaches the package index for Python's packages.
PODMAN ?= podman
IMAGE ?= localhost/servo-model-server:latest
SLIM_IMAGE ?= localhost/servo-model-server:slim
IMAGE_EXTRAS ?= tensorflow,text,onnx,tflite,s3,gcs
SLIM_IMAGE_EXTRAS ?= onnx,tflite
IMAGE_BASE := localhost/servo-base:bookworm
IMAGE_BUILD_BASE := localhost/servo-build-base:bookworm
IMAGE_DIR := build/container
# Global flags for podman. runc, as crun refuses a machine whose cgroups are half v1, half v2
# (this sandbox's); the run flags keep the container's limits at or below the machine's, as
# raising them needs CAP_SYS_RESOURCE, which a sandbox may not grant.
PODMAN_FLAGS ?= --runtime=runc
CONTAINER_LIMITS ?= --ulimit=nofile=$(shell ulimit -Hn):$(shell ulimit -Hn) --ulimit=nproc=4096:4096
# pip in the build trusts this machine's CA bundle (a proxy's CA may be in it), mounted
# read-only into the build and so kept out of the image.
HOST_CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
MMDEBSTRAP := mmdebstrap --quiet --variant=essential --dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*'

container-packages:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq podman runc mmdebstrap; }

$(IMAGE_DIR)/base.tar: | container-packages
	mkdir -p $(IMAGE_DIR)
	$(SUDO) $(MMDEBSTRAP) --include=python3,ca-certificates,libstdc++6 bookworm $(@:.tar=.part.tar) && mv $(@:.tar=.part.tar) $@

$(IMAGE_DIR)/build-base.tar: | container-packages
	mkdir -p $(IMAGE_DIR)
	$(SUDO) $(MMDEBSTRAP) --include=python3-venv,ca-certificates,libstdc++6 bookworm $(@:.tar=.part.tar) && mv $(@:.tar=.part.tar) $@

# The bases, imported when the engine does not have them.
container-bases: $(IMAGE_DIR)/base.tar $(IMAGE_DIR)/build-base.tar
	$(PODMAN) image exists $(IMAGE_BASE) || $(PODMAN) import $(IMAGE_DIR)/base.tar $(IMAGE_BASE)
	$(PODMAN) image exists $(IMAGE_BUILD_BASE) || \
		$(PODMAN) import $(IMAGE_DIR)/build-base.tar $(IMAGE_BUILD_BASE)

IMAGE_BUILD_ARGS = $(PODMAN_FLAGS) build --format=docker $(CONTAINER_LIMITS) \
	--build-arg BASE=$(IMAGE_BASE) --build-arg BUILD_BASE=$(IMAGE_BUILD_BASE) \
	$(if $(wildcard $(HOST_CA_BUNDLE)),-v $(HOST_CA_BUNDLE):/run/host-ca.pem:ro --build-arg PIP_CERT=/run/host-ca.pem) \
	-f deploy/container/Containerfile

image: container-bases
	$(PODMAN) $(IMAGE_BUILD_ARGS) --build-arg EXTRAS=$(IMAGE_EXTRAS) -t $(IMAGE) .
	$(PODMAN) image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' $(IMAGE)

image-slim: container-bases
	$(PODMAN) $(IMAGE_BUILD_ARGS) --build-arg EXTRAS=$(SLIM_IMAGE_EXTRAS) -t $(SLIM_IMAGE) .
	$(PODMAN) image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' $(SLIM_IMAGE)

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(KSERVE_VENV) .pytest_cache .ruff_cache .mypy_cache build src/*.egg-info
