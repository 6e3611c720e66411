# agent-ledger image: built in the official Rust image, run as a non-root
# user in a slim Debian image. The evidence SQL files are embedded in the
# binary, so the runtime image holds the binary only.
#
#   docker build -t agent-ledger .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY evidence ./evidence
RUN cargo build --release --locked --bin agent-ledger

FROM debian:bookworm-slim
# ca-certificates for https:// ClickHouse URLs; curl for the health check.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/agent-ledger --create-home agent-ledger \
    && install --directory --owner=10001 --group=10001 /var/lib/agent-ledger/spool
COPY --from=build /src/target/release/agent-ledger /usr/local/bin/agent-ledger
USER 10001:10001
WORKDIR /var/lib/agent-ledger
# Inside a container the listeners must accept connections from other
# containers; publish the ports on the host's loopback only (see
# docker-compose.yml).
ENV AGENT_LEDGER_OTLP_GRPC_ADDR=0.0.0.0:4317 \
    AGENT_LEDGER_ADMIN_ADDR=0.0.0.0:9464 \
    AGENT_LEDGER_LOG_FORMAT=json
EXPOSE 4317 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--output", "/dev/null", "http://127.0.0.1:9464/readyz"]
ENTRYPOINT ["agent-ledger"]
CMD ["serve"]
