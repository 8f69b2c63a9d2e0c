# A small image of Tern: built in the Rust image, run from Debian slim as
# an unprivileged user.
#   docker build -t tern .
#   docker run --rm -p 2525:2525 -p 8025:8025 -v $PWD/my-tern.toml:/etc/tern/tern.toml:ro tern
# The shipped config listens on 127.0.0.1 only: in a container, set the
# listener and [admin] addresses to 0.0.0.0 (the admin API then needs a
# token, and TLS or allow_plaintext) in the file you mount.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tern \
 && strip target/release/tern

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/tern --create-home --shell /usr/sbin/nologin tern
COPY --from=build /src/target/release/tern /usr/local/bin/tern
COPY config/tern.toml config/shaping.toml config/bounces.toml /etc/tern/
USER tern
WORKDIR /var/lib/tern
VOLUME /var/lib/tern
EXPOSE 25 2525 8025
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tern"]
CMD ["run", "--config", "/etc/tern/tern.toml"]
