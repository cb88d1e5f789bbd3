# tanova-sync in a container: non-root, read-only root file system, state on a
# volume, the CV folder mounted read-only, health checked by the binary itself.
#
# Real world (pulls rust:1-bookworm and debian:bookworm-slim, compiles here):
#   docker build -t tanova-sync .
# With a binary built beforehand (a bookworm-compatible glibc build at
# dist/tanova-sync; this is how the tests build it, with no registry):
#   DOCKER_BUILDKIT=1 docker build --build-arg BINARY=prebuilt -t tanova-sync .
# BuildKit skips the stage that is not used; the legacy builder would try to
# pull rust:1-bookworm anyway.

ARG BINARY=compiled

FROM rust:1-bookworm AS compiled
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tanova-sync \
 && cp target/release/tanova-sync /tanova-sync

FROM scratch AS prebuilt
COPY dist/tanova-sync /tanova-sync

FROM ${BINARY} AS binary

FROM debian:bookworm-slim
# No ca-certificates needed: the binary falls back to its bundled Mozilla roots.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/tanova --shell /usr/sbin/nologin tanova \
 && mkdir -p /var/lib/tanova /cvs \
 && chown tanova:tanova /var/lib/tanova
COPY --from=binary /tanova-sync /usr/local/bin/tanova-sync
USER tanova:tanova
ENV HOME=/var/lib/tanova \
    TANOVA_FOLDER_PATH=/cvs \
    TANOVA_STATE_DIR=/var/lib/tanova \
    TANOVA_LISTEN=127.0.0.1:9898
VOLUME ["/var/lib/tanova"]
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["tanova-sync", "healthcheck"]
ENTRYPOINT ["tanova-sync"]
CMD ["watch"]
