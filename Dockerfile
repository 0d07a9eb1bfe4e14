FROM python:3.11-slim

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .

ENV PORT=4000 UPLOAD_DIR=/app/static/uploads
EXPOSE 4000
STOPSIGNAL SIGTERM
CMD ["python", "orchestrator.py"]
