# One image for the API and the worker; the command chooses:
#   docker run IMAGE api --host 0.0.0.0       (HTTP API on 8000)
#   docker run -e SPRITEQ_PROBE_URL=http://127.0.0.1:9100/metrics IMAGE worker --metrics-host 0.0.0.0
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY backend ./backend
COPY mocks ./mocks
COPY fixtures ./fixtures
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
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
