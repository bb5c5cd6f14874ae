# syntax=docker/dockerfile:1
# Quartier's image: the API (`quartier serve`, the default command), the ingester
# (`quartier ingest`) and the schema migration (`quartier db migrate`); docker-compose.yml runs all
# three. Debian slim with Python 3.11 (requirements.lock is for Python 3.11 on Linux x86_64), every
# package installed from the lock with its hash checked, run as a user without privileges.
# tests/test_compose.py checks this file outside Docker (docs/scaling.md says what it does not run).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY deploy/build-requirements.txt deploy/build-requirements.txt
RUN python -m pip install --require-hashes -r deploy/build-requirements.txt
COPY pyproject.toml README.md ./
COPY quartier quartier
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 QUARTIER_ENVIRONMENT=production
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/quartier \
        --shell /usr/sbin/nologin quartier
COPY requirements.lock /tmp/requirements.lock
RUN python -m pip install --require-hashes --no-deps -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock
COPY --from=build /dist/ /tmp/dist/
RUN python -m pip install --no-deps /tmp/dist/quartier-*.whl && rm -r /tmp/dist
COPY deploy/docker-entrypoint.sh /usr/local/bin/quartier-entrypoint
COPY deploy/healthcheck.py /usr/local/bin/quartier-healthcheck
RUN chmod 0755 /usr/local/bin/quartier-entrypoint /usr/local/bin/quartier-healthcheck
USER quartier
WORKDIR /home/quartier
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/usr/local/bin/quartier-healthcheck", "http://127.0.0.1:8000/health"]
ENTRYPOINT ["quartier-entrypoint"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
