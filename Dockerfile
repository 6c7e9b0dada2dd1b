# cems ingester and gateway image (used by docker-compose.yml)
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cems ./cems
COPY gateways ./gateways
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["cems"]
CMD ["run"]
