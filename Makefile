# The front door. Every target runs inside the project environment (scripts/in-env builds it if missing).
CONFIG ?= configs/penguins.yaml
IN_ENV := scripts/in-env
PYTEST_ARGS ?=
KFP_ARGS ?=

.PHONY: run test lint format env serve predict bench compile-kubeflow clean

env:
	$(IN_ENV) python -c "import tfx, tensorflow as tf; print('tfx', tfx.__version__, 'tensorflow', tf.__version__)"

run:
	$(IN_ENV) python -m pipeline.cli run --config $(CONFIG)

test:
	$(IN_ENV) python -m pytest $(PYTEST_ARGS)

lint:
	$(IN_ENV) ruff check .
	$(IN_ENV) ruff format --check .

format:
	$(IN_ENV) ruff format .
	$(IN_ENV) ruff check --fix .

# Kubeflow V2 / Vertex AI PipelineJob JSON (default output/kubeflow/pipeline.json); KFP_ARGS e.g. --image=... --pipeline-root=gs://...
compile-kubeflow:
	$(IN_ENV) python -m pipeline.cli compile --config $(CONFIG) $(KFP_ARGS)

bench:
	$(IN_ENV) python bench/pipeline_time.py --config $(CONFIG)

clean:
	rm -rf output
