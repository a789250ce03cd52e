# The gateway image: slim, no torch and no weights.
#   docker build -f deploy/docker/gateway.Dockerfile -t visioncompare/gateway:0.1.0 .
# The gateway reaches the model services over gRPC only, so it installs the package without
# the `models` extra and from only what it runs: the generated contracts (visioncompare/v1, visioncompare/oip),
# the runtime it stands on (visioncompare/runtime) and the server itself (visioncompare/gateway). The model services,
# the shapes reference models (visioncompare/shapes_models/, their weights), the shapes lab (shapes/) and the
# vcompare tools (visioncompare/tools/: the CLI, evaluate, its report, the local stack) are not copied,
# so the wheel built here holds none of them;
# gateway.Dockerfile.dockerignore (read by BuildKit instead of the root .dockerignore) keeps
# them out of the build context too; the legacy builder reads the root .dockerignore, shared with
# the model images, which lets the shapes weights through (they never reach this image).
# tests/deploy/test_images_docker.py checks all of this offline.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# pip's own settings, unset unless given: an air-gapped build points them at a wheelhouse
# (README, "Air-gapped hosts"), e.g. PIP_NO_INDEX=1 PIP_FIND_LINKS=http://127.0.0.1:8000/
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The dependencies in their own layer, before any source: exactly the gateway's lock, hashed
# (README, "Dependencies"; `make lock`): the `gateway` extra's closure, no model framework and
# nothing of the `vcompare` extra (matplotlib, faster-coco-eval, typer, pyyaml).
COPY requirements/pip.txt requirements/gateway.txt requirements/
RUN pip install --require-hashes -r requirements/pip.txt \
    && pip install --require-hashes -r requirements/gateway.txt
COPY pyproject.toml README.md ./
COPY visioncompare/__init__.py visioncompare/py.typed visioncompare/
COPY visioncompare/v1 visioncompare/v1
COPY visioncompare/oip visioncompare/oip
COPY visioncompare/runtime visioncompare/runtime
COPY visioncompare/gateway visioncompare/gateway
# The project installed (not editable, its dependencies from the layer above), then checked: the
# gateway imports, and no model framework, model service, shapes model, shapes lab, vcompare tool
# or dependency of the tools is importable in the venv the final image gets. The package's console
# scripts whose modules are not here (the model services', and vcompare's) are removed: the image
# keeps vision-gateway and vc-healthcheck.
RUN pip install --no-deps . && pip check \
    && python -I -c "import visioncompare.gateway.server, visioncompare.gateway.http" \
    && python -I -c "import importlib.util as u, sys; \
bad = [m for m in ('torch', 'torchvision', 'segment_anything', 'open_clip', 'onnxruntime', 'shapes', \
'visioncompare.shapes_models', 'visioncompare.maskrcnn', 'visioncompare.samclip', 'visioncompare.tools', \
'visioncompare.testing', 'matplotlib', 'faster_coco_eval', 'typer') \
if u.find_spec(m)]; sys.exit(f'in the gateway venv: {bad}' if bad else 0)" \
    && rm /opt/venv/bin/maskrcnn-service /opt/venv/bin/samclip-service /opt/venv/bin/fetch-weights /opt/venv/bin/export-onnx \
        /opt/venv/bin/vcompare

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --home-dir /home/app --create-home app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
EXPOSE 50050 8080 9092
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["vc-healthcheck", "--port", "50050"]
CMD ["vision-gateway"]
