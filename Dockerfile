# ckey for production: one image, three commands.
#   API (default)   python -m ckey.api          serves on 0.0.0.0:8080
#   worker          python -m worker
#   migration       ckey db upgrade             run once before the others, on every upgrade
# docker-compose.yml shows them wired to PostgreSQL, a Temporal cluster and an OIDC provider.

# Build stage: install ckey and its dependencies into a self-contained virtualenv.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/ckey
WORKDIR /src
# Only what the package is built from (the .dockerignore keeps the rest out of the build context too).
COPY pyproject.toml README.md worker.py ./
COPY ckey ckey
COPY workflows workflows
COPY activities activities
COPY sandbox sandbox
# A regular (not editable) install: the runtime image does not need the sources.
RUN /opt/ckey/bin/pip install .

# Runtime stage: the virtualenv and an unprivileged user, nothing else.
FROM python:3.11-slim

RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/ckey --create-home --shell /usr/sbin/nologin ckey \
 && chmod 0700 /var/lib/ckey \
 # The audit checkpoint key's folder: a named volume mounted here takes this owner and mode on first use.
 && install -d -m 0700 -o ckey -g ckey /var/lib/ckey/audit-key

COPY --from=build /opt/ckey /opt/ckey

ENV PATH=/opt/ckey/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Production defaults; the deployment sets endpoints and credentials. CKEY_SANDBOX=false is the settings' default
# too: said again here, belt and braces, so that no .env in the working directory turns the stand-ins on.
ENV CKEY_SANDBOX=false \
    CKEY_DATA_DIR=/var/lib/ckey \
    CKEY_API_HOST=0.0.0.0 \
    CKEY_API_PORT=8080

USER 10001:10001
WORKDIR /var/lib/ckey
EXPOSE 8080

CMD ["python", "-m", "ckey.api"]
