#!/bin/bash
# Build the python-ric fixture: a provided.al2023 function directory that runs
# AWS's official Python runtime interface client (awslambdaric) unchanged.
#
#   tests/functions/build_python_ric.sh OUT_DIR
#
# OUT_DIR gets app.py, awslambdaric (+ deps) and an executable `bootstrap`.
# Zip its contents to deploy: (cd OUT_DIR && zip -qr ../python-ric.zip .)
# The wheels must match the sandbox interpreter, /usr/bin/python3 (CPython 3.11).
set -euo pipefail
OUT=${1:?usage: build_python_ric.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
SANDBOX_PY=${SANDBOX_PY:-/usr/bin/python3}
PYVER=$("$SANDBOX_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PIP=${PIP:-}
if [ -z "$PIP" ]; then
  if "$SANDBOX_PY" -m pip --version >/dev/null 2>&1; then PIP="$SANDBOX_PY -m pip"; else PIP="python3 -m pip"; fi
fi
mkdir -p "$OUT"
# Binary wheels only, for the sandbox's Python version and platform.
$PIP install --quiet --disable-pip-version-check --no-compile --upgrade \
  --target "$OUT" --only-binary=:all: \
  --python-version "$PYVER" --implementation cp --platform manylinux2014_x86_64 \
  awslambdaric
cp "$HERE/python-ric/app.py" "$OUT/app.py"
cat > "$OUT/bootstrap" <<'BOOT'
#!/bin/sh
# provided.al2023 bootstrap: AWS's awslambdaric, unchanged.
TASK_ROOT="${LAMBDA_TASK_ROOT:-/var/task}"
export PYTHONPATH="$TASK_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec /usr/bin/python3 -m awslambdaric "$_HANDLER"
BOOT
chmod 755 "$OUT/bootstrap"
# Check it imports under the sandbox interpreter.
PYTHONPATH="$OUT" "$SANDBOX_PY" -c 'import awslambdaric.bootstrap, awslambdaric.lambda_runtime_client' \
  || { echo "awslambdaric does not import under $SANDBOX_PY" >&2; exit 1; }
echo "built $OUT"
