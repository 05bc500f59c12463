# The platform's image: the Dagster code location (and, with another command, the daemon,
# the webserver or the client API). Configuration comes from application.yml/monitoring.yml
# baked in and BIP__... environment overrides; secrets only from the environment.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DAGSTER_HOME=/opt/dagster/home \
    BIP_APPLICATION_YML=/opt/dagster/app/application.yml \
    BIP_MONITORING_YML=/opt/dagster/app/monitoring.yml \
    BIP__BATCH_INFERENCE__DATABRICKS__WHEEL=/opt/dagster/wheels/platform.whl

# gcc: tl2cgen compiles tree models at validation; libgomp1: LightGBM's OpenMP runtime.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dagster/app
COPY pyproject.toml README.md ./
COPY batch_inference_platform ./batch_inference_platform
COPY spark_jobs ./spark_jobs
RUN pip install -U pip \
 && pip install . \
 && pip wheel --no-deps -w /opt/dagster/wheels . \
 && mv /opt/dagster/wheels/batch_inference_platform-*.whl /opt/dagster/wheels/platform.whl
COPY application.yml monitoring.yml tenants.yml workspace.yaml ./
COPY deploy/dagster.yaml /opt/dagster/home/dagster.yaml

RUN useradd --create-home --uid 10001 bip \
 && mkdir -p /opt/dagster/home /opt/dagster/data \
 && chown -R bip /opt/dagster
USER bip
ENV BIP__BATCH_INFERENCE__DATA_DIR=/opt/dagster/data

EXPOSE 3000 4000 8080
# Code server for Dagster+ hybrid or OSS; override the command for the other processes:
#   dagster-daemon run | dagster-webserver -h 0.0.0.0 -p 3000 -w workspace.yaml | batch-inference api
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "batch_inference_platform.definitions"]
