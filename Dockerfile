# One image for the API and the worker; the command chooses:
#   docker run IMAGE api --host 0.0.0.0       (HTTP API on 8000)
#   docker run -e SPRITEQ_PROBE_URL=http://127.0.0.1:9100/metrics IMAGE worker --metrics-host 0.0.0.0
# The base image is pinned by digest (python:3.11-slim, linux/amd64 + arm64 index); the
# dependencies are the exact, hash-checked versions of requirements.lock (scripts/lock.sh).
# Only backend/ goes in: the mock PixelLab (mocks/) and test fixtures (fixtures/) stay out.
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS build
WORKDIR /src
COPY requirements.lock ./
RUN pip install --no-cache-dir --no-deps --require-hashes --prefix=/install -r requirements.lock
COPY pyproject.toml README.md ./
COPY backend ./backend
# Our own package, with no dependency resolution and built by the base image's setuptools
# (fixed by the digest above), so nothing unpinned is downloaded.
RUN pip install --no-cache-dir --no-deps --no-build-isolation --prefix=/install .

FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /install /usr/local
RUN useradd --create-home --uid 10001 spritequeue
USER spritequeue
WORKDIR /home/spritequeue
EXPOSE 8000 9100
# The API answers /health/live; for a worker set SPRITEQ_PROBE_URL=http://127.0.0.1:9100/metrics.
ENV SPRITEQ_PROBE_URL=http://127.0.0.1:8000/health/live
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(os.environ['SPRITEQ_PROBE_URL'], timeout=2)"
ENTRYPOINT ["spritequeue"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
