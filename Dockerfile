# syntax=docker/dockerfile:1
#
# imclust container images (linux/amd64: the pinned ONNX Runtime wheels are x86_64 builds).
#
#   docker build -t imclust:0.1.0 .                                  # CPU: coordinator + workers
#   docker build -t imclust:0.1.0-cuda --target runtime-cuda .       # GPU workers (CUDA 13, cuDNN 9)
#
# Both images: ENTRYPOINT tini -> /usr/local/bin/imclust, so Kubernetes manifests give only
# `args` (e.g. ["worker", "--coordinator", "http://imclust-coordinator:50051"]); setting
# `command` would drop tini. They run as uid/gid 10001, WORKDIR /work, and write nothing to the
# root filesystem: with readOnlyRootFilesystem mount an emptyDir on /tmp (HOME points there).
# Operations guide: docs/operations.md.

# Rust toolchain (>= the workspace's rust-version, 1.88). Built on bookworm (glibc 2.36) so the
# binary also runs on the CUDA image's Ubuntu 24.04 (glibc 2.39); a newer builder (trixie,
# glibc 2.41) could emit symbols that Ubuntu 24.04 lacks.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
# onnxruntime-gpu 1.31.1 on PyPI is built against CUDA 13 and cuDNN 9 (its `cuda` / `cudnn`
# extras are nvidia-*-cu13); the CUDA provider needs libcudart.so.13, libcublas(Lt).so.13 and
# libcurand.so.10 from this image and libcuda.so.1 from the node's driver (>= 580).
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

############################################################################################
# Build: the release binary.
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# Only what `cargo build -p imclust-cli` reads: the workspace, the crates and the .proto files
# (compiled by imclust-proto's build.rs with protox: no protoc needed). ring (TLS) needs a C
# compiler, which the rust:*-slim images have.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY proto proto
# BuildKit cache mounts keep the crate registry and target/ between builds; target/ is a cache
# mount, so the binary is copied out within the same RUN. --locked: exactly Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p imclust-cli \
 && install -D -m 0755 target/release/imclust /out/imclust

############################################################################################
# ONNX Runtime (CPU): libonnxruntime.so.1.31.1 out of the onnxruntime==1.31.1 wheel. The pins
# (wheel and library sha256) live in scripts/fetch-onnxruntime.sh, the same script developers
# run; fetch_wheel_member.py refuses a wheel or a library with another digest.
FROM ${PYTHON_IMAGE} AS onnxruntime-cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY scripts/fetch-onnxruntime.sh scripts/fetch_wheel_member.py scripts/
RUN bash scripts/fetch-onnxruntime.sh \
 && install -D -m 0644 .cache/onnxruntime/libonnxruntime.so.1.31.1 /out/libonnxruntime.so.1.31.1

############################################################################################
# ONNX Runtime (CUDA): the onnxruntime-gpu==1.31.1 wheel's libonnxruntime.so.1.31.1 and its
# provider libraries (pins in scripts/fetch-onnxruntime-gpu.sh). They must stay in one folder:
# ONNX Runtime loads libonnxruntime_providers_{shared,cuda,tensorrt}.so from the folder of
# libonnxruntime itself.
FROM ${PYTHON_IMAGE} AS onnxruntime-gpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY scripts/fetch-onnxruntime-gpu.sh scripts/fetch_wheel_member.py scripts/
RUN bash scripts/fetch-onnxruntime-gpu.sh \
 && mkdir -p /out \
 && install -m 0644 .cache/onnxruntime-gpu/*.so* /out/

############################################################################################
# CUDA runtime (`--target runtime-cuda`): GPU workers (runtime.device = "cuda" or "auto").
# The node needs the NVIDIA driver and the device plugin (pods ask for nvidia.com/gpu); the
# image's NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES let the container toolkit mount
# the driver libraries. TensorRT is not included: runtime.device = "tensorrt" falls back to
# CUDA with a warning.
FROM ${CUDA_IMAGE} AS runtime-cuda
# tini is in Ubuntu's universe component (enabled in the nvidia/cuda images).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 imclust \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin imclust \
 && install -d -o 10001 -g 10001 -m 0755 /work
COPY --from=onnxruntime-gpu /out/ /usr/local/lib/onnxruntime/
COPY --from=builder /out/imclust /usr/local/bin/imclust
# As in the CPU image (below); CUDA_CACHE_PATH: the CUDA JIT cache goes to /tmp (the
# writable emptyDir) instead of ~/.nv.
ENV ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so.1.31.1 \
    HOME=/tmp \
    NO_COLOR=1 \
    CUDA_CACHE_PATH=/tmp/.nv/ComputeCache
WORKDIR /work
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/imclust"]
CMD ["--help"]
LABEL org.opencontainers.image.title="imclust-cuda" \
      org.opencontainers.image.description="Cluster large image collections: embed, seed, k-means (CUDA workers)" \
      org.opencontainers.image.licenses="Apache-2.0"

############################################################################################
# CPU runtime (the default target: the last stage of this file): coordinator and CPU workers.
FROM ${RUNTIME_IMAGE} AS runtime
# ca-certificates: object-store and HTTPS clients verify servers against the system CA store
# (rustls-platform-verifier reads it); without it every s3:// / gs:// / https:// call fails.
# libstdc++6 / libgcc-s1: libonnxruntime is C++. tini: PID 1 that forwards SIGTERM (a process
# running as PID 1 gets no default signal handling, so `imclust coordinator` would otherwise
# ignore SIGTERM until the kubelet's SIGKILL) and reaps children.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 libgcc-s1 tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 imclust \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin imclust \
 && install -d -o 10001 -g 10001 -m 0755 /work
COPY --from=onnxruntime-cpu /out/libonnxruntime.so.1.31.1 /usr/local/lib/onnxruntime/libonnxruntime.so.1.31.1
COPY --from=builder /out/imclust /usr/local/bin/imclust
# imclust loads ONNX Runtime at run time (ort's load-dynamic) from ORT_DYLIB_PATH.
# HOME=/tmp: the only place a pod with a read-only root filesystem can write (an emptyDir).
# NO_COLOR: the log lines carry no ANSI colour codes (they would otherwise, even when stderr
# is a container log rather than a terminal).
ENV ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so.1.31.1 \
    HOME=/tmp \
    NO_COLOR=1
# Relative paths in a job spec (dataset, bundles, output, cache) resolve against /work; on
# Kubernetes prefer absolute paths (/models/...) and object-store URLs.
WORKDIR /work
# Numeric uid:gid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# 50051: gRPC (cluster.listen); 9090: Prometheus /metrics when enabled (cluster.metrics_listen,
# --metrics-listen). Workers dial out only; 9090 is theirs when given --metrics-listen.
EXPOSE 50051 9090
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/imclust"]
CMD ["--help"]
LABEL org.opencontainers.image.title="imclust" \
      org.opencontainers.image.description="Cluster large image collections: embed, seed, k-means (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
