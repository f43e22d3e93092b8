# sllm_ray image: `docker build -t sllm-ray .` (CPU build of vLLM; --build-arg EXTRA=gpu for CUDA).
# On x86-64, pip resolves torch==2.13.0 to the CUDA build unless PIP_EXTRA_INDEX_URL points
# at PyTorch's CPU wheel index: pass it as a build arg for a small CPU image.
# Run with `--shm-size` at least `store_dram_bytes` (2 GiB by default) plus what Ray needs:
# the checkpoint store's DRAM tier lives in /dev/shm, which Docker caps at 64 MiB.
FROM python:3.11-slim

ARG EXTRA=cpu
ARG PIP_EXTRA_INDEX_URL=""
ENV RAY_USAGE_STATS_ENABLED=0 \
    PIP_NO_CACHE_DIR=1 \
    PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}

RUN apt-get update && apt-get install -y --no-install-recommends make gcc g++ libnuma1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/sllm_ray
COPY pyproject.toml README.md Makefile ./
COPY sllm_ray ./sllm_ray
COPY configs ./configs

RUN pip install -e ".[${EXTRA}]" \
    && if [ "${EXTRA}" = cpu ]; then pip uninstall -y torchvision torchaudio torchcodec; fi \
    && python -m sllm_ray.tools.tiny_model models/tiny-llama \
    && sed -i 's/host: 127.0.0.1/host: 0.0.0.0/' configs/serve.yaml

EXPOSE 8000
CMD ["serve", "run", "configs/serve.yaml"]
