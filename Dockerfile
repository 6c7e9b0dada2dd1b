# cems ingester and gateway image (used by docker-compose.yml)
FROM python:3.11.9-slim-bookworm
# mosquitto_passwd (Debian package mosquitto) hashes the broker's password file in `cems broker-config`
RUN apt-get update \
    && apt-get install -y --no-install-recommends mosquitto \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY cems ./cems
COPY gateways ./gateways
# Exact versions, as tested: constraints.txt pins every runtime dependency.
RUN pip install --no-cache-dir -c constraints.txt .
# An unprivileged user with a writable state directory (SQLite state, events, alert outbox, spool): the
# compose volume cems-state is mounted there and takes its owner and mode 0700 on first use.
# /var/lib/cems-broker: where the broker-config service writes acl and passwd, owned by uid 1883 (the
# mosquitto user of the eclipse-mosquitto image, which must read them).
RUN useradd --system --uid 10001 --home-dir /var/lib/cems --shell /usr/sbin/nologin cems \
    && install -d -o cems -g cems -m 0700 /var/lib/cems \
    && install -d -o 1883 -g 1883 -m 0700 /var/lib/cems-broker
ENV CEMS_STATE_DIR=/var/lib/cems
USER cems
ENTRYPOINT ["cems"]
CMD ["run"]
