# Bring your own model: a folder with model.py (a LabelStudioMLBase subclass, written for label-studio-ml or
# for labelstack) and requirements.txt, built on the labelstack ML backend image and served by its server:
# same basic auth, webhook trust, training pool, read-only uid 1002 container. The folder is the build context:
#   docker build -f compose/ml-backend/byo.Dockerfile --build-arg BASE_IMAGE=<labelstack ml-backend image> <folder>
# ML_MODEL_CLASS=model picks the one subclass model.py defines; name it (model:MyClass) when there are several.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

USER root
COPY requirements.txt /opt/ml-model/requirements.txt
# The base image's pins are constraints: a model's requirements cannot move the server's Flask or scikit-learn.
RUN pip install --only-binary=:all: -r /opt/ml-model/requirements.txt -c /opt/ml-backend/requirements.txt \
 && find /opt/venv -name "__pycache__" -type d -prune -exec rm -rf {} +
COPY . /opt/ml-model/
RUN chmod -R a+rX,go-w /opt/ml-model

ENV PYTHONPATH=/opt/ml-model:/opt/ml-backend \
    ML_MODEL_CLASS=model
USER 1002
