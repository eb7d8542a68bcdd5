# devgate in a container.
#
#   docker build -t devgate .
#   docker run -d --name devgate -p 5684:5684/udp \
#       -v devgate-etc:/etc/devgate -v devgate-data:/var/lib/devgate devgate
#
# /etc/devgate holds devgate.json and projects/ (a named volume starts with
# the default config below); /var/lib/devgate holds the database and the
# generated development certificates. The RUN steps live in scripts/ so CI
# runs them natively: tests/integration/packaging_test.py.

# Builder: the same scripts/deps.sh and make as everyone else.
# deps.sh first, on its own, so that a change of the sources does not
# rebuild wolfSSL.
FROM debian:bookworm-slim AS build
WORKDIR /src
COPY scripts/deps.sh scripts/docker-build-stage.sh scripts/
RUN scripts/docker-build-stage.sh --deps
COPY . .
RUN scripts/docker-build-stage.sh

# Runtime: the binary and the shared libraries it links, nothing else.
FROM debian:bookworm-slim AS runtime
COPY scripts/docker-runtime-stage.sh /usr/local/lib/devgate/runtime-stage.sh
RUN /usr/local/lib/devgate/runtime-stage.sh
COPY conf/install/devgate.json /etc/devgate/devgate.json
COPY conf/install/projects-README.md /etc/devgate/projects/README.md
COPY --from=build /src/build/devgate /usr/local/bin/devgate
USER devgate
WORKDIR /var/lib/devgate
EXPOSE 5684/udp
VOLUME ["/etc/devgate", "/var/lib/devgate"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["devgate", "health", "-c", "/etc/devgate/devgate.json"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/devgate", "serve", "-c", "/etc/devgate/devgate.json"]
