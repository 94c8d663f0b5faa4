# Shadowline in a container: one image for the demo model servers, the shadow proxy and Locust.
#
#   docker build -t shadowline .
#   docker run --rm shadowline --help
#   docker compose up          (see docker-compose.yml)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the distribution needs (no .venv, runs or benchmarks from the build context).
COPY pyproject.toml README.md ./
COPY harness ./harness
COPY proxies ./proxies
COPY reports ./reports

# `[load]` brings Locust, which the locust-master and locust-worker services run.
RUN pip install ".[load]"

# Not root inside the container; /runs is where the proxy writes its run directories (a volume).
RUN useradd --create-home --uid 10001 shadowline \
    && mkdir -p /runs \
    && chown shadowline:shadowline /runs
USER shadowline

ENTRYPOINT ["shadowline"]
CMD ["--help"]
