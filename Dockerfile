# syntax=docker/dockerfile:1
# dashboard-server container image: build the wheel with the Rust toolchain, then install only
# that wheel (and its PyPI dependencies) into a slim Python runtime running as a non-root user.
#
#   docker build -t dashboard-server .
#   docker run --rm -p 8080:8080 dashboard-server                      # live demo feed
#   docker run --rm -p 8080:8080 -e DASHBOARD_REDIS_URL=redis://redis:6379/0 \
#       -e DASHBOARD_AUTH_TOKENS=... -e DASHBOARD_ALLOWED_ORIGINS=https://desk.example.com \
#       dashboard-server
#
# Configuration: DASHBOARD_* environment variables (docs/configuration.md), or a YAML file
# mounted into the container and named by DASHBOARD_CONFIG. docs/operations.md covers deployment.
# tests/packaging/test_dockerfile.py keeps this file in step with the repository and the Makefile.

# One Debian release and one Python for building and running: the wheel (tagged for this CPython
# version, e.g. cp311) and its glibc are exactly the runtime's.
ARG DEBIAN_RELEASE=bookworm
ARG RUST_VERSION=1.95
ARG PYTHON_VERSION=3.11

# The Rust toolchain, taken from the official image.
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS rust

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS build
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo /usr/local/cargo
# The linker for rustc, and make.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev make \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir "maturin>=1.5,<2" && cargo --version
WORKDIR /src
COPY Makefile Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust/ rust/
COPY python/ python/
# The same target as on a workstation: the release wheel and the sdist into dist/.
RUN make wheel PYTHON=python3 MATURIN=maturin

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 dashboard \
    && useradd --system --uid 10001 --gid dashboard --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin dashboard
COPY --from=build /src/dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/dashboard_server-*.whl \
    && rm -rf /tmp/dist \
    && dashboard-server --version
# Listen on every interface inside the container; everything else keeps its default and can be
# set with DASHBOARD_* variables at `docker run` (turn authentication on: docs/security.md).
ENV DASHBOARD_HOST=0.0.0.0 \
    DASHBOARD_PORT=8080 \
    DASHBOARD_LOG_LEVEL=info
USER 10001:10001
EXPOSE 8080
# /health answers 200 while serving (also when degraded: every instance shares a Redis outage)
# and 503 once shutting down; it never needs a token. The slim image has no curl: use Python.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DASHBOARD_PORT', '8080') + '/health', timeout=2)"]
# SIGTERM: health 503, clients closed with 1001, exit 0 (give it DASHBOARD_SHUTDOWN_GRACE_S
# plus DASHBOARD_CLOSE_TIMEOUT_S before a SIGKILL: `docker stop --time`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["dashboard-server"]
CMD ["serve"]
