# ringgate container image: `docker build -t ringgate:0.1.0 .` (the image deploy/k8s uses).
# Multi-stage: the build stage compiles the release binaries; the runtime stage is a slim
# Debian with the two binaries, the default config, and a non-root user.
#
# io_uring inside containers: the default seccomp profiles of Docker and containerd block
# io_uring_setup, so under them ringgate logs that it falls back to the epoll driver. Run
# with a profile that allows io_uring_setup, io_uring_enter and io_uring_register (or
# seccompProfile: Unconfined in Kubernetes, as deploy/k8s/ explains) to get io_uring.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ringgate --bin ringgate-backend

FROM debian:bookworm-slim
RUN useradd --system --no-create-home --shell /usr/sbin/nologin ringgate
COPY --from=build /src/target/release/ringgate /usr/local/bin/ringgate
COPY --from=build /src/target/release/ringgate-backend /usr/local/bin/ringgate-backend
COPY config/routing.toml /etc/ringgate/routing.toml
USER ringgate
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/ringgate"]
CMD ["--config", "/etc/ringgate/routing.toml"]
