# The front door. Every target runs inside the project environment (scripts/in-env builds it if missing).
CONFIG ?= configs/penguins.yaml
IN_ENV := scripts/in-env
PYTEST_ARGS ?=
# Test processes: one per core, at most 4 (each holds TensorFlow and a Beam pipeline, ~3 GB).
# Files are the unit of distribution, so a module's pipeline-run fixture runs once.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
KFP_ARGS ?=

INPUT ?= configs/samples/penguins.csv
SERVE_ARGS ?=
MONITOR_ARGS ?=
ACCELERATOR ?= cpu
MODEL_PATH ?= gs://YOUR_BUCKET/serving/penguins

.PHONY: run test test-env lint format env serve predict explain monitor retrain manifests bench bench-serving bench-quantization bench-fashion-mnist bench-trainer bench-text-series bench-scale bench-ingestion babynames-data bench-monitoring bench-retraining compile-kubeflow clean

env:
	$(IN_ENV) python -c "import tfx, tensorflow as tf; print('tfx', tfx.__version__, 'tensorflow', tf.__version__)"

run:
	$(IN_ENV) python -m pipeline.cli run --config $(CONFIG)

test: test-env
	$(IN_ENV) python -m pytest --numprocesses=$(PYTEST_WORKERS) --dist=loadfile $(PYTEST_ARGS)

# Runs on the host: what is visible inside the environment, several checkouts sharing it.
test-env:
	bash tests/test_in_env.sh

lint:
	$(IN_ENV) ruff check .
	$(IN_ENV) ruff format --check .

format:
	$(IN_ENV) ruff format .
	$(IN_ENV) ruff check --fix .

# Kubeflow V2 / Vertex AI PipelineJob JSON (default output/kubeflow/pipeline.json); KFP_ARGS e.g. --image=... --pipeline-root=gs://...
compile-kubeflow:
	$(IN_ENV) python -m pipeline.cli compile --config $(CONFIG) $(KFP_ARGS)

# Serves output/serving/<model_name> on 127.0.0.1:8500 (gRPC) and :8501 (REST) until Ctrl-C.
serve:
	$(IN_ENV) python -m pipeline.cli serve --config $(CONFIG) $(SERVE_ARGS)

predict:
	$(IN_ENV) python -m pipeline.cli predict --config $(CONFIG) --input $(INPUT)

# Integrated gradients of each row of INPUT against the pushed model (no server needed).
explain:
	$(IN_ENV) python -m pipeline.cli explain --config $(CONFIG) --input $(INPUT)

# Drift of the logged requests (or MONITOR_ARGS="--examples DIR") vs the served model's training
# data; writes output/monitoring/<model>/<time>/; exits 3 on drift.
monitor:
	$(IN_ENV) python -m pipeline.cli monitor --config $(CONFIG) $(MONITOR_ARGS)

# The same, then a pipeline run (warm-started) on drift or on data changed since the
# served model's training; only a better model is pushed.
retrain:
	$(IN_ENV) python -m pipeline.cli monitor --retrain --config $(CONFIG) $(MONITOR_ARGS)

# Kubernetes manifests for tensorflow/serving (ACCELERATOR=cpu|gpu|tpu, MODEL_PATH=gs://... or pvc:...).
manifests:
	$(IN_ENV) python -m serving manifests --model-name $$($(IN_ENV) python -c "from pipeline.config import load_config; print(load_config('$(CONFIG)').model_name)") --model-path $(MODEL_PATH) --accelerator $(ACCELERATOR) --out output/k8s/$(ACCELERATOR)

bench:
	$(IN_ENV) python -m bench.pipeline_time --config $(CONFIG)

# gRPC Predict load test on loopback against the pushed model (a synthetic one before `make run`).
bench-serving:
	$(IN_ENV) python -m bench.serving --config $(CONFIG)

bench-quantization:
	$(IN_ENV) python -m bench.quantization

bench-fashion-mnist:
	$(IN_ENV) python -m bench.fashion_mnist

bench-trainer:
	$(IN_ENV) python -m bench.trainer_throughput

# One cold run each of configs/bbc_news.yaml and configs/forda.yaml against issue 11's targets.
bench-text-series:
	$(IN_ENV) python -m bench.text_series

# The babynames pipeline cold at 10k, 100k and 1M rows, and a plain pandas + tf_keras floor (issue 14).
bench-scale:
	$(IN_ENV) python -m bench.scale

# The ExampleGen alone (its checks included) at 100k and 1M babynames rows (issue 14).
bench-ingestion:
	$(IN_ENV) python -m bench.scale --ingestion --sizes 100000,1000000

# The 1M-row babynames CSV configs/babynames.yaml reads.
babynames-data:
	$(IN_ENV) python -m bench.scale --write-csv 1000000

# Serving p50 with request logging off / 0.1 / 1.0, and monitor on 100k logged requests (after make run).
bench-monitoring:
	$(IN_ENV) python -m bench.monitoring --config $(CONFIG)

# Retraining on 2007-2009 penguins warm-started from a 2007 model vs from scratch (three runs).
bench-retraining:
	$(IN_ENV) python -m bench.monitoring --retraining --config $(CONFIG)

clean:
	rm -rf output
