# inferd's container image. The build stage runs the README's run command's own steps
# (scripts/setup.sh serve, then cargo build), so the image and a checkout build the same way;
# the runtime stage holds the binary, ONNX Runtime's library from its wheel, and the quick
# start's sentence encoder, and runs as a non-root user.
#
#   docker build -t inferd .
#   docker run -p 8000:8000 -p 8001:8001 -p 8002:8002 inferd serve --no-auth --host 0.0.0.0
#
# Kubernetes manifests that run it: deploy/kubernetes/.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV INFERD_CACHE=/cache CARGO_TARGET_DIR=/cache/target
RUN bash scripts/setup.sh serve >/dev/null \
 && cargo build --release --locked --bin inferd \
 && install -D /cache/target/release/inferd /out/bin/inferd \
 && install -D "$(ls /cache/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n1)" \
      /out/lib/libonnxruntime.so \
 && mkdir -p /out/cache && cp -rL /cache/models /out/cache/models

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/inferd inferd
COPY --from=build /out/bin/inferd /usr/local/bin/inferd
COPY --from=build /out/lib/libonnxruntime.so /usr/local/lib/libonnxruntime.so
COPY --from=build --chown=10001 /out/cache /var/lib/inferd/.cache/inferd
ENV INFERD_ONNXRUNTIME_LIB=/usr/local/lib/libonnxruntime.so \
    INFERD_CACHE=/var/lib/inferd/.cache/inferd \
    INFERD_DATA_DIR=/var/lib/inferd/data
USER 10001
WORKDIR /var/lib/inferd
EXPOSE 8000 8001 8002
# Ready: every model version loaded (Kubernetes uses its own probes; see deploy/kubernetes).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["inferd", "health", "--server", "http://127.0.0.1:8000"]
ENTRYPOINT ["inferd"]
CMD ["serve", "--no-auth", "--host", "0.0.0.0"]
