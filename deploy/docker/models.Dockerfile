# syntax=docker/dockerfile:1.7
# The model service images, one per target:
#   docker build -f deploy/docker/models.Dockerfile --target maskrcnn -t visioncompare/maskrcnn:0.1.0 .
#   docker build -f deploy/docker/models.Dockerfile --target samclip  -t visioncompare/samclip:0.1.0 .
# torch==2.14.1 from PyPI is the CUDA 12 build (CUDA and cuDNN come as nvidia-* wheels); the
# host needs the NVIDIA driver and container toolkit. Weights are read from /models, never baked in.
# ONNX Runtime (ENGINE=onnxruntime): onnxruntime-gpu by default (the `gpu` extra: CUDA and TensorRT
# execution providers); a CPU-only image takes plain onnxruntime with --build-arg ONNXRUNTIME=cpu.
# Exported ONNX files are cached in /models/onnx/ (export-onnx, or the first start).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG ONNXRUNTIME=gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The dependencies in their own layer, before any source: exactly their lock, hashed (README,
# "Dependencies"; `make lock`): models-gpu.txt, or models-cpu.txt with ONNXRUNTIME=cpu.
COPY requirements/pip.txt requirements/models-gpu.txt requirements/models-cpu.txt requirements/
RUN pip install --require-hashes -r requirements/pip.txt \
    && pip install --require-hashes -r requirements/models-${ONNXRUNTIME}.txt
COPY pyproject.toml README.md ./
COPY protos/gen protos/gen
COPY services services
COPY gateway gateway
# the shapes reference models (shapes_models/, with their weights); not the shapes lab
COPY shapes_models shapes_models
# the project itself: its dependencies are all in the layer above
RUN pip install --no-deps . && pip check

FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /home/app --create-home app \
    && mkdir -p /models && chown app /models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 TORCH_HOME=/models
USER 10001
VOLUME ["/models"]

FROM runtime AS maskrcnn
ENV MASKRCNN_CACHE_DIR=/models
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 CMD ["vc-healthcheck", "--port", "50051"]
CMD ["maskrcnn-service"]

FROM runtime AS samclip
ENV SAMCLIP_CACHE_DIR=/models SAMCLIP_PORT=50052 SAMCLIP_METRICS_PORT=9091
EXPOSE 50052 9091
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 CMD ["vc-healthcheck", "--port", "50052"]
CMD ["samclip-service"]
