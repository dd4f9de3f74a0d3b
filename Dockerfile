# syntax=docker/dockerfile:1
# Portcullis container image: see docs/deploy.md.
#
#   docker build -t portcullis .
#
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

# ---- build -------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# The workspace needs Rust and a C compiler only (the rust image has both): libpg_query's
# bindings are pre-generated for 64-bit Linux (build-support/bindgen-pregenerated), so no
# libclang. TLS is rustls, so no OpenSSL.
COPY . .
# The registry and the target directory are cache mounts, kept between builds; the binary is
# copied out of the target directory because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release -p portcullis --locked \
 && install -D -m 0755 target/release/portcullis /out/portcullis

# ---- runtime -----------------------------------------------------------------------------
FROM debian:bookworm-slim
# The binary is linked dynamically against glibc (present in the base image) and needs the
# system CA certificates for https upstreams, OIDC issuers, witnesses and sinks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=20230311* \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid, so that volume and secret ownership can be set on the host (chown 10001).
RUN groupadd --system --gid 10001 portcullis \
 && useradd --system --uid 10001 --gid portcullis --home-dir /var/lib/portcullis \
      --no-create-home --shell /usr/sbin/nologin portcullis \
 && install -d -o portcullis -g portcullis -m 0700 /var/lib/portcullis /var/lib/portcullis/tmp \
 && install -d -m 0755 /etc/portcullis
COPY --from=build /out/portcullis /usr/local/bin/portcullis
# Everything the gateway writes is under the data directory (gateway.data_dir), so the root
# file system can be read-only (docker run --read-only). The configuration is mounted
# read-only at /etc/portcullis; the audit signing key is mounted as a secret, outside the data
# directory (audit.signing_key must not be inside gateway.data_dir).
ENV TMPDIR=/var/lib/portcullis/tmp
VOLUME ["/var/lib/portcullis"]
WORKDIR /var/lib/portcullis
USER 10001:10001
# 8080: front door (MCP, HTTP targets, /healthz). 8081: admin API and web console.
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
ENTRYPOINT ["portcullis"]
CMD ["serve", "--config", "/etc/portcullis/portcullis.toml"]
