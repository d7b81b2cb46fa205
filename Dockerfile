# syntax=docker/dockerfile:1
# Multi-stage build: compile with the Rust toolchain (--locked: exactly the
# versions in Cargo.lock; no protoc needed), run on distroless (glibc and CA
# certificates, no shell, no package manager) as a non-root user.
#   docker build -t orgsplit:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches speed up rebuilds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin orgsplit \
    && cp target/release/orgsplit /orgsplit

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="orgsplit" \
      org.opencontainers.image.description="Splits Prometheus remote write and Loki pushes by namespace organization" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /orgsplit /usr/local/bin/orgsplit
# The manifests' runAsUser; numeric, so runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/orgsplit"]
CMD ["--config", "/etc/orgsplit/config.yaml"]
