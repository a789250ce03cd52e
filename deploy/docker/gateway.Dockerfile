# syntax=docker/dockerfile:1.7
# The gateway image: slim, no torch.
#   docker build -f deploy/docker/gateway.Dockerfile -t visioncompare/gateway:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos/gen protos/gen
COPY services services
COPY gateway gateway
COPY shapes shapes
RUN pip install ".[gateway]" && pip check

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --home-dir /home/app --create-home app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
EXPOSE 50050 8080 9092
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["vc-healthcheck", "--port", "50050"]
CMD ["vision-gateway"]
