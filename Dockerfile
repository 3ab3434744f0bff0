# Relfleet: every binary (relfleet-worker, relctl, kubesim, relfleet-devbroker) in one image.
#   docker build -t relfleet:latest .
#   docker run relfleet:latest render            # a worker; the stage is the argument
#   docker run --entrypoint relctl relfleet:latest --help

# -- build: the toolchain and -dev packages, as ops/bootstrap names them ---------------
FROM debian:bookworm AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config \
        librdkafka-dev libpq-dev libcurl4-openssl-dev libjansson-dev libyaml-dev \
        libhiredis-dev libmicrohttpd-dev libcmocka-dev libssl-dev libjemalloc-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRELFLEET_WERROR=ON \
    && cmake --build /build -j"$(nproc)" \
    && ctest --test-dir /build --output-on-failure -R 'unit\.test_(config|metrics|msg|schema|render)$'

# -- runtime: the shared libraries only, a non-root user -------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        librdkafka1 libpq5 libcurl4 libjansson4 libyaml-0-2 libhiredis0.14 \
        libmicrohttpd12 libssl3 libjemalloc2 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 relfleet \
    && useradd --system --uid 10001 --gid relfleet --home-dir /nonexistent \
        --shell /usr/sbin/nologin relfleet \
    && install -d -o relfleet -g relfleet /var/lib/kubesim
COPY --from=build /build/bin/relfleet-worker /build/bin/relctl /build/bin/kubesim \
    /build/bin/relfleet-devbroker /usr/local/bin/
COPY schemas /usr/share/relfleet/schemas
COPY ops/demo/templates /usr/share/relfleet/templates
ENV RELFLEET_SCHEMA_DIR=/usr/share/relfleet/schemas \
    RELFLEET_METRICS_ADDR=0.0.0.0:9464 \
    RELFLEET_LOG_FORMAT=json
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["relfleet-worker"]
CMD ["--help"]
