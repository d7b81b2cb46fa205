# Multi-stage build: compile with the Rust toolchain (no protoc needed), run
# on distroless (glibc and CA certificates, no shell) as a non-root user.
#   docker build -t orgsplit:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin orgsplit \
    && cp target/release/orgsplit /orgsplit

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /orgsplit /usr/local/bin/orgsplit
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/orgsplit"]
CMD ["--config", "/etc/orgsplit/config.yaml"]
