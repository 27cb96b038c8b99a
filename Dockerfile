# gradsync in a container: the same command as on a laptop, under Docker, Kubernetes or Slurm
# (with Pyxis/Enroot or Apptainer).
#
#   docker build -t gradsync .
#   docker run --rm -v "$PWD/runs:/work/runs" gradsync train --max-steps 50
#   docker run --rm --gpus all --shm-size 8g -v "$PWD/runs:/work/runs" gradsync train --model gpt2
#
# torch comes from PyPI at the version constraints.txt pins: on Linux x86_64 that wheel is the
# CUDA build (it runs on CPU too). Mount /work (or set --run-dir) to keep runs past the container.
FROM python:3.11-slim

WORKDIR /opt/gradsync
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN pip install --no-cache-dir -c constraints.txt '.[all]'

# the cache (tokenizers, measured peak, calibration profile, generated data) lives with the runs
ENV GRADSYNC_CACHE=/work/.cache/gradsync PYTHONUNBUFFERED=1
WORKDIR /work
ENTRYPOINT ["gradsync"]
CMD ["--help"]
