# The pipeline image: every Kubeflow / Vertex AI task, Vertex AI Training job and
# Dataflow worker runs in it. Same recipe and lock as scripts/in-env: Debian trixie,
# its python3, a venv at /opt/venv, `pip install -c requirements.lock -r requirements.in`.
#
# Build context: the repository root (.dockerignore keeps output/ and caches out).
#   docker build -t REGION-docker.pkg.dev/PROJECT/tfx/tfx-pipeline:TAG .
FROM debian:trixie-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc g++ ca-certificates make git \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TF_USE_LEGACY_KERAS=1 \
    PYTHONUNBUFFERED=1

WORKDIR /pipeline
COPY requirements.in requirements.lock requirements-nodeps.txt ./
RUN python3 -m venv /opt/venv \
 && pip install --no-cache-dir --upgrade pip \
 && pip install --no-cache-dir -c requirements.lock -r requirements.in \
 && pip install --no-cache-dir --no-deps -r requirements-nodeps.txt

# The project's packages, installed (not editable): components import
# pipeline.training, models.preprocessing and components.* by module path.
COPY pyproject.toml README.md ./
COPY pipeline/ pipeline/
COPY components/ components/
COPY models/ models/
COPY serving/ serving/
COPY kubeflow/ kubeflow/
COPY configs/ configs/
RUN pip install --no-cache-dir --no-deps . \
 && python -c "import pipeline.training, models.preprocessing, components.anomaly_gate, kubeflow.local_executor"

# Dataflow starts its workers through Beam's boot program; pipeline tasks set their
# own command (TFX's Kubeflow V2 entrypoint), so this entrypoint serves Dataflow only.
COPY --from=apache/beam_python3.13_sdk:2.77.0 /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
