# cems ingester and gateway image (used by docker-compose.yml)
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY cems ./cems
COPY gateways ./gateways
# Exact versions, as tested: constraints.txt pins every runtime dependency.
RUN pip install --no-cache-dir -c constraints.txt .
USER nobody
ENTRYPOINT ["cems"]
CMD ["run"]
