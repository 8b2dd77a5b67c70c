#!/usr/bin/env bash
# The Python packages the launcher needs that the project's device machine lacks (its image has
# Python 3.12, PyTorch, timm, nvidia-ml-py, psutil, OpenCV and matplotlib, but no Ultralytics), as
# wheels in .whl/ (git ignores it), at the versions installed here: run this where pip reaches PyPI,
# then carry .whl/ to the device machine; tests/gpu/tune.sh installs them there (~56 MB, polars most).
#   bash tests/gpu/wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "ultralytics==$(version ultralytics)" "ultralytics-thop==$(version ultralytics-thop)" \
    "polars==$(version polars)" "polars-runtime-32==$(version polars-runtime-32)" "tenacity==$(version tenacity)"
ls -l .whl
