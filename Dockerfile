# Kubernetes Incident Detector: a two-stage build. The builder installs the package into a
# virtualenv; the runtime image receives that virtualenv and nothing else from the build.

FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The build context is trimmed by .dockerignore to the package and its metadata.
COPY . .
# Extras: postgres by default, so that one image runs with DATABASE_URL or without it (psycopg's
# binary wheel brings its own libpq: nothing to apt-get; it is imported only when DATABASE_URL is
# set). `--build-arg EXTRAS=postgres,grpc` adds the gRPC change feed (CHANGE_GRPC_PORT).
ARG EXTRAS="postgres"
# pip compiles the bytecode at install time, so the read-only runtime never needs to write it.
# The import checks that the driver's wheel loads on this base (the runtime's, too).
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" \
 && python -c "import incident_detector" \
 && case ",$EXTRAS," in *,postgres,*) python -c "import psycopg; psycopg.pq.version()";; esac

FROM python:3.11-slim
# A fixed numeric user and group, no home directory, no login shell: the Deployment's
# runAsUser/runAsGroup/fsGroup (10001) match these ids.
RUN groupadd --system --gid 10001 detector \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin detector \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/incident-detector
COPY --from=builder /opt/venv /opt/venv
# MALLOC_ARENA_MAX=2: glibc gives each thread that allocates its own malloc arena, and the
# detector runs a dozen (the Kubernetes reads and the change watches); two arenas hold about
# 0.5 to 1 MB less resident memory, measured with `python -m bench.footprint --memory`.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    STATE_PATH=/var/lib/incident-detector/state.sqlite3
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "incident_detector"]
