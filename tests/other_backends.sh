#!/usr/bin/env bash
# The tests marked every_backend, on Keras' JAX and PyTorch backends (the full suite runs on TensorFlow).
# Needs the jax extra and a PyTorch CPU wheel: pip install -e ".[test,jax]" "torch==2.13.0+cpu"
set -euo pipefail
cd "$(dirname "$0")/.."
for backend in jax torch; do
  echo "== KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider -n 2 -m "every_backend and not tensorflow_only" tests "$@"
done
