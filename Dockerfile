# Builds the static musl binary and ships it alone in a scratch image.
#
#   podman build -t ingress-service-monitor .        (or docker build)
#   podman build --build-arg RUST_IMAGE=mirror.example/library/rust:1-bookworm -t ingress-service-monitor .
#
# Containerfile.scratch makes the same runtime image from a binary built on the host;
# its header lists what the image needs at run time (a CA bundle for https agents).

# A build argument so that a registry mirror or a pinned digest can be used instead.
ARG RUST_IMAGE=docker.io/library/rust:1-bookworm

FROM ${RUST_IMAGE} AS builder

# musl-tools gives musl-gcc, which `ring` needs to compile its C and assembly for the musl
# target. The version is pinned (hadolint DL3008) to the one bookworm ships; it is a
# build argument so that a builder image from another Debian release can pass its own.
ARG MUSL_TOOLS_VERSION=1.2.3-1
RUN apt-get update \
    && apt-get install -y --no-install-recommends "musl-tools=${MUSL_TOOLS_VERSION}" \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl

WORKDIR /src
# Only what the build reads, so an edit to docs or CI files does not invalidate the layer.
# sim/ is a workspace member: cargo needs its manifest to resolve the workspace.
COPY Cargo.toml Cargo.lock ./
COPY sim sim
COPY src src
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin ingress-service-monitor

FROM scratch

COPY --from=builder /src/target/x86_64-unknown-linux-musl/release/ingress-service-monitor /ingress-service-monitor

# Numeric: scratch has no /etc/passwd. The binary stays root-owned, so read-only to it.
USER 65532:65532

# /health (HEALTHPORT's default).
EXPOSE 10000

# Exec form: no shell in the image; SIGTERM reaches the daemon, which deregisters.
ENTRYPOINT ["/ingress-service-monitor"]
