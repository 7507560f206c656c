FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker worker
COPY tasks tasks
COPY config config
COPY setup.py ./
# gcc builds worker/cityscapes/_unfilter.c (the image has Python's headers), then leaves.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home cityscapes
USER cityscapes
CMD ["celery", "-A", "worker", "worker", "-l", "INFO"]
