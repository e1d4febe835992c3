# kvserve serving image, CPU:  docker build -t kvserve:cpu .
# (GPU: Dockerfile.cuda.) Serving dependencies only: `pip install .` without the [train]
# extra, so no torch, transformers or optimum (DESIGN.md). The model artifact is not baked
# in: mount kvserve-export's output dir at /models/kvserve (deploy/k8s/base/deployment.yaml).
#   docker run -p 50051:50051 -p 8000:8000 -v "$PWD/runs/demo/artifact-int8:/models/kvserve:ro" kvserve:cpu
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# g++ builds kvserve's C++ kernels (kernels/, setup.py) inside `pip install`; the runtime
# stage needs only libstdc++, which the base image has
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/kvserve
ENV PATH=/opt/kvserve/bin:$PATH
WORKDIR /src
# Only what the serving packages need (.dockerignore keeps the context to these too).
COPY pyproject.toml setup.py README.md ./
COPY kernels/ kernels/
COPY proto/ proto/
COPY artifact/ artifact/
COPY envopts/ envopts/
COPY server/ server/
COPY loadtest/ loadtest/
RUN pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/kvserve /opt/kvserve
ENV PATH=/opt/kvserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    KVSERVE_MODEL=/models/kvserve \
    KVSERVE_HOST=0.0.0.0 \
    KVSERVE_METRICS_HOST=0.0.0.0 \
    KVSERVE_PROVIDER=cpu
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin kvserve
USER 10001:10001
EXPOSE 50051 8000
# Exec form: the server is PID 1 and gets SIGTERM itself, so a stop drains gracefully.
ENTRYPOINT ["kvserve-serve"]
