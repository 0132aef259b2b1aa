# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are compiled in their own layer (rebuilt only when Cargo.toml or
# Cargo.lock change), and the runtime image is distroless (no shell, non-root, ~35 MB in all).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /app

# 1. Dependencies only, against placeholder sources (every target the manifests declare needs a
#    file, benches included, or Cargo refuses the manifest).
COPY Cargo.toml Cargo.lock ./
COPY migration/Cargo.toml migration/Cargo.toml
COPY allocator/Cargo.toml allocator/Cargo.toml
# Build settings (the bundled SQLite's compile flags): part of the dependencies' layer.
COPY .cargo .cargo
RUN mkdir -p src migration/src allocator/src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs allocator/src/lib.rs \
    && echo 'fn main() {}' > migration/src/main.rs && touch migration/src/lib.rs \
    && echo 'fn main() {}' > benches/admin.rs \
    && cargo build --release --locked --bin multipult \
    && rm -rf src migration/src allocator/src benches

# 2. The application itself. `.ci/dockerfile-replay` replays this stage without a Docker engine.
COPY src src
COPY migration/src migration/src
COPY allocator/src allocator/src
COPY benches benches
RUN touch src/main.rs src/lib.rs migration/src/lib.rs allocator/src/lib.rs \
    && cargo build --release --locked --bin multipult

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /app/target/release/multipult /usr/local/bin/multipult
ENV APP_ENV=production \
    APP_HOST=0.0.0.0 \
    APP_PORT=8080 \
    LOG_FORMAT=json \
    DATA_DIR=/tmp/multipult
EXPOSE 8080
USER nonroot
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/multipult", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/multipult"]
CMD ["serve"]
