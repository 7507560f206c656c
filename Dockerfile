FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker worker
COPY tasks tasks
COPY config config
RUN pip install --no-cache-dir .
RUN useradd --create-home cityscapes
USER cityscapes
CMD ["celery", "-A", "worker", "worker", "-l", "INFO"]
