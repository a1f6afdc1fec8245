# The sessionwatch worker image (see docker-compose.yml). Same image later for `apply` / archiver.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# .dockerignore lets in only pyproject.toml, README.md and the packages.
WORKDIR /tmp/src
COPY . .
# A regular (not editable) install: the source tree is not needed at run time.
RUN pip install ".[pipeline,console]" \
    && cd / && rm -rf /tmp/src

# Non-root. The data dir exists and is owned by the user before a named volume is mounted there,
# so Docker initialises the (empty) volume with this ownership.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/sessionwatch \
        --shell /usr/sbin/nologin sessionwatch \
    && mkdir -p /var/lib/sessionwatch \
    && chown sessionwatch:sessionwatch /var/lib/sessionwatch
USER sessionwatch
WORKDIR /var/lib/sessionwatch
ENV SESSIONWATCH_DATA_DIR=/var/lib/sessionwatch
VOLUME ["/var/lib/sessionwatch"]

ENTRYPOINT ["sessionwatch"]
CMD ["worker"]
