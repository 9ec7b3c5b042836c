# fer_ray on the official Ray image of the Ray and Python versions pinned in pyproject.toml
# (tests/test_deploy.py checks that they match). One image for `ray up cluster.yaml` and KubeRay.
#
#   docker build -t REGISTRY/fer-ray:0.1.0-cpu .                         # CPU: head, scoring workers
#   docker build --build-arg VARIANT=gpu -t REGISTRY/fer-ray:0.1.0-gpu . # CUDA: GPU training workers
#
# The code, the shipped models (fer_ray/assets/) and the job scripts live in /home/ray/fer_ray,
# so entrypoints are `python /home/ray/fer_ray/jobs/<job>.py ...` and jobs need no runtime_env.
ARG RAY_VERSION=2.58.0
ARG PYTHON_TAG=py311
# cpu | gpu (the gpu tags carry CUDA and cuDNN)
ARG VARIANT=cpu
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}

ARG VARIANT=cpu
# The same pins as pyproject.toml; PyTorch's own index picks the CPU or CUDA build.
ARG TORCH_VERSION=2.14.1
ARG TORCH_CUDA=cu128

ENV RAY_USAGE_STATS_ENABLED=0 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /home/ray/fer_ray
RUN if [ "$VARIANT" = "gpu" ]; then flavour="$TORCH_CUDA"; else flavour=cpu; fi \
    && pip install --index-url "https://download.pytorch.org/whl/${flavour}" "torch==${TORCH_VERSION}"
# Dependencies first (cached while only the code changes), then the package itself.
COPY --chown=ray:users pyproject.toml README.md ./
# The train extra: the image also runs training workers (torch is the CPU or CUDA build installed above).
RUN mkdir fer_ray && touch fer_ray/__init__.py && pip install -e '.[train]' && rm -rf fer_ray
COPY --chown=ray:users fer_ray ./fer_ray
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users examples ./examples
COPY --chown=ray:users serve_config.yaml MODEL_CARD.md ./
RUN pip install --no-deps -e . \
    && python -c "import fer_ray, ray; from fer_ray.inference.artifact import load_artifact; load_artifact(); print('fer_ray', fer_ray.__file__, 'ray', ray.__version__)"
