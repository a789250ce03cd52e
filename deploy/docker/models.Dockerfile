# The model service images, one per target:
#   docker build -f deploy/docker/models.Dockerfile --target maskrcnn -t visioncompare/maskrcnn:0.1.0 .
#   docker build -f deploy/docker/models.Dockerfile --target samclip  -t visioncompare/samclip:0.1.0 .
# torch==2.14.1 from PyPI is the CUDA 13 build (2.14.1+cu130; CUDA and cuDNN come as nvidia-*
# wheels); the host needs the NVIDIA driver and container toolkit. Official weights are read from
# /models (fetch-weights), never baked in; the shapes reference weights ship in the image.
# ONNX Runtime (ENGINE=onnxruntime): onnxruntime-gpu by default (the `gpu` extra: its CUDA execution
# provider; TensorRT is not installed, so MASKRCNN_/SAMCLIP_ONNX_TENSORRT=true fails at start unless
# you add it); a CPU-only image takes plain onnxruntime with --build-arg ONNXRUNTIME=cpu.
# Exported ONNX files are cached in /models/onnx/ (export-onnx, or the first start).
# ONNX Runtime's telemetry is off (ORT_DISABLE_TELEMETRY=1 below; the runtime turns it off too).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# The system and the dependencies, in a stage of their own that only the locks feed: the image is
# this stage plus one small layer, the project (a source change touches only that one).
FROM ${PYTHON_IMAGE} AS deps
# libgomp1 from Debian unless the base image has it (an air-gapped base has it: no apt there)
RUN { ldconfig -p | grep -q libgomp.so.1 || { apt-get update && apt-get install -y --no-install-recommends libgomp1 \
        && rm -rf /var/lib/apt/lists/*; }; } \
    && useradd --system --uid 10001 --home-dir /home/app --create-home app \
    && mkdir -p /models && chown app /models
# ONNX Runtime's flavour: gpu (onnxruntime-gpu, requirements/models-gpu.txt) or cpu (onnxruntime,
# requirements/models-cpu.txt).
ARG ONNXRUNTIME=gpu
# Where torch and torchvision come from. Empty (the default): PyPI's torch==2.14.1, the CUDA 13
# build with its NVIDIA libraries, exactly as locked. A PyTorch index such as
# https://download.pytorch.org/whl/cpu: its CPU build of the same versions, without the NVIDIA
# libraries and triton (README, "Images", for what each costs), installed by version, not by
# hash (the locks hold PyPI's files); the rest of the lock as locked.
ARG TORCH_INDEX_URL=
# pip's own settings, unset unless given: an air-gapped build points them at a wheelhouse
# (README, "Air-gapped hosts"), e.g. PIP_NO_INDEX=1 PIP_FIND_LINKS=http://127.0.0.1:8000/
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Exactly their lock, hashed (README, "Dependencies"; `make lock`).
COPY requirements/pip.txt requirements/models-gpu.txt requirements/models-cpu.txt /tmp/requirements/
RUN cd /tmp/requirements && pip install --require-hashes -r pip.txt \
    && if [ -z "$TORCH_INDEX_URL" ]; then pip install --require-hashes -r "models-${ONNXRUNTIME}.txt"; else \
        awk '/^[A-Za-z0-9]/ { skip = ($0 ~ /^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)==/) } !skip' \
            "models-${ONNXRUNTIME}.txt" > without-torch.txt \
        && pip install --require-hashes -r without-torch.txt \
        && pip install --no-deps --index-url "$TORCH_INDEX_URL" \
            "torch==$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "models-${ONNXRUNTIME}.txt")" \
            "torchvision==$(sed -n 's/^torchvision==\([^ ]*\).*/\1/p' "models-${ONNXRUNTIME}.txt")"; fi \
    && rm -rf /tmp/requirements

# The project itself, built from the source into a prefix of its own (/opt/project).
FROM deps AS build
# (pip's settings again: ARGs end with their stage; the build fetches setuptools and wheel)
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
WORKDIR /src
COPY pyproject.toml README.md ./
COPY visioncompare/__init__.py visioncompare/py.typed visioncompare/
COPY visioncompare/v1 visioncompare/v1
COPY visioncompare/oip visioncompare/oip
COPY visioncompare/runtime visioncompare/runtime
COPY visioncompare/maskrcnn visioncompare/maskrcnn
COPY visioncompare/samclip visioncompare/samclip
# the shapes reference models (visioncompare/shapes_models/, with their weights); not the shapes lab, not the
# gateway, the vcompare tools or the test helpers: their console scripts, whose modules are not here, are removed
COPY visioncompare/shapes_models visioncompare/shapes_models
RUN pip install --no-deps --prefix /opt/project . \
    && rm /opt/project/bin/vision-gateway /opt/project/bin/vcompare

# The dependencies' stage, as it is (no copy of its gigabytes), and the project on top.
FROM deps AS runtime
COPY --from=build /opt/project/ /opt/venv/
ENV PYTHONUNBUFFERED=1 TORCH_HOME=/models ORT_DISABLE_TELEMETRY=1
RUN pip check && python -I -B -c "import visioncompare.maskrcnn.model, visioncompare.samclip.model, visioncompare.shapes_models.cards" \
    && python -I -B -c "import importlib.util as u, sys; \
bad = [m for m in ('visioncompare.gateway', 'visioncompare.tools', 'visioncompare.testing', 'shapes') \
if u.find_spec(m)]; sys.exit(f'in the model image: {bad}' if bad else 0)"
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
