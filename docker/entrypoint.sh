#!/bin/sh
# The image's entry point: `train`, `predict`, `evaluate`, `export`, `crossval` or `onnx-run`,
# then that command's own arguments (Hydra overrides for train and predict). Anything else is
# run as given (e.g. bash).
set -e
case "$1" in
  train|predict|evaluate|export|crossval)
    command="$1"
    shift
    exec python -m "hybrid_unet.$command" "$@"
    ;;
  onnx-run)
    shift
    exec python -m hybrid_unet.inference.onnx_runner "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
