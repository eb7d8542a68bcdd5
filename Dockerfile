# devgate in a container. A stub until the operations issue: it builds with
# the same scripts/deps.sh and make as everyone else.
FROM debian:bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends make git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/deps.sh && make

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        libuv1 libsqlite3-0 libcjson1 libcbor0.8 libcoap3 \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/devgate devgate
COPY --from=build /src/build/devgate /usr/local/bin/devgate
USER devgate
EXPOSE 5684/udp
VOLUME ["/etc/devgate", "/var/lib/devgate"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/devgate", "serve", "-c", "/etc/devgate/devgate.json"]
