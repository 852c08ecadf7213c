# Image of the adoption-rate worker and replay, used by docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Every dependency ships a manylinux wheel for CPython 3.11, so the slim
# image needs no compiler.
COPY pyproject.toml ./
COPY stream ./stream
RUN pip install .

COPY config ./config

# The package finds config/ (channels, mappings such as sf311) next to its own
# folder. The installed copy lives in site-packages, where no config/ exists,
# so /app comes first on the path and the identical /app/stream is imported.
ENV PYTHONPATH=/app \
    ADOPTION_DATA_DIR=/var/lib/adoption-rate

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin adoption \
    && mkdir -p /var/lib/adoption-rate \
    && chown adoption /var/lib/adoption-rate
USER adoption

EXPOSE 6066
CMD ["adoption-rate", "worker"]
