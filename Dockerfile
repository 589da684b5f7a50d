# syntax=docker/dockerfile:1
#
# tug: one binary for the server (`tug server`, the default command) and the CI client
# (`tug deploy`). Build:   docker build -t tug .
# Run:     docker run -v $PWD/tug.yaml:/etc/tug/tug.yaml:ro -v tug-data:/var/lib/tug \
#            -p 12010:12010 -p 12011:12011 tug
# The configuration must listen on 0.0.0.0 to be reachable from outside the container
# (or set TUG_LISTEN_HTTP / TUG_LISTEN_GRPC).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep downloaded crates and build artefacts between builds; the binary is copied out
# of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tug \
 && install -m 0755 target/release/tug /usr/local/bin/tug

FROM debian:bookworm-slim
# What tug needs at run time (README.md, "One binary"; deploy/image/build.sh installs the same):
# git does every clone, fetch and push; openssh-client for ssh:// remotes; ca-certificates for
# git over https:// (tug's own HTTPS calls carry their root certificates).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 tug \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/tug --no-create-home \
      --shell /usr/sbin/nologin tug \
 && mkdir -p /var/lib/tug /etc/tug \
 && chown 10001:10001 /var/lib/tug
COPY --from=build /usr/local/bin/tug /usr/local/bin/tug
# The job store (SQLite) and the bare mirrors live here; it overrides `data_dir` of the file.
ENV TUG_DATA_DIR=/var/lib/tug
VOLUME ["/var/lib/tug"]
WORKDIR /var/lib/tug
USER 10001:10001
# gRPC and REST, the Delivery server's ports.
EXPOSE 12010 12011
ENTRYPOINT ["tug"]
CMD ["server", "--config", "/etc/tug/tug.yaml"]
