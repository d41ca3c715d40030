# ConvScope: serves the app on port 8000.
#
#   docker build -t convscope .
#   docker run -p 8000:8000 convscope                 # CPU
#   docker run --gpus all -p 8000:8000 convscope      # GPU: PyPI's torch wheels for x86-64 Linux bundle CUDA
#
# CUDA base image variant (e.g. to match a cluster's CUDA stack); Python is installed into it below:
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 -t convscope:cuda .
# Extra pip options (e.g. another wheel index for a CPU-only torch) go in PIP_EXTRA_ARGS.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG PIP_EXTRA_ARGS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CONVSCOPE_HOST=0.0.0.0 \
    CONVSCOPE_PORT=8000 \
    CONVSCOPE_STORAGE_DIR=/var/lib/convscope/images \
    TORCH_HOME=/var/lib/convscope/torch \
    MALLOC_ARENA_MAX=2
# MALLOC_ARENA_MAX: glibc's arenas bounded from the first thread on; the server also tunes malloc itself
# (server/services/memory/allocator.py), so a bare `convscope serve` gets the same.

# CUDA base images have no Python; python:*-slim already does.
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv python3-pip && \
        rm -rf /var/lib/apt/lists/*; \
    fi

RUN groupadd --system convscope && useradd --system --gid convscope --create-home convscope && \
    mkdir -p /var/lib/convscope/images /var/lib/convscope/torch && chown -R convscope:convscope /var/lib/convscope

WORKDIR /app
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, for layer caching: only pyproject.toml decides them.
COPY pyproject.toml README.md ./
RUN mkdir -p server models && touch server/__init__.py models/__init__.py && \
    pip install ${PIP_EXTRA_ARGS} . && pip uninstall -y convscope && rm -rf server models build

COPY server ./server
COPY models ./models
COPY frontend ./frontend
# Editable install: the app finds frontend/ and the bundled weights beside its code.
RUN pip install --no-deps -e . && chown -R convscope:convscope /app

USER convscope
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4).status == 200 else 1)"
CMD ["convscope", "serve"]
