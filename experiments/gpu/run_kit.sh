#!/usr/bin/env bash
# The GPU validation kit's one command, run in the repository root of the GPU machine:
#
#   bash experiments/gpu/run_kit.sh            # report.md, report.json, logs.tar.gz in $OUT
#
# 1. installs the carried wheels (CPython 3.12, as there) (.whl/, made by experiments/gpu/fetch_wheels.py) with --no-deps into
#    a target folder put on PYTHONPATH (nothing of the image is replaced: no carried wheel is on it);
# 2. runs experiments/gpu/run_checks.py, which checks the imports first and skips, naming them,
#    the CUDA checks where there is no GPU.
# Environment: OUT (default outputs/gpu_kit), KIT_PYTHON (default python3), KIT_SITE (default
# /tmp/prresq-site), KIT_BUDGET_S (default 450: no work starts after that; the whole kit ends well
# inside 8 minutes). Extra arguments go to run_checks.py.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/outputs/gpu_kit}
PY=${KIT_PYTHON:-python3}
SITE=${KIT_SITE:-/tmp/prresq-site}
mkdir -p "$OUT"
start=$(date +%s)
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if compgen -G ".whl/*.whl" >/dev/null && [ "$pyver" = "3.12" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || { echo "wheel install failed" | tee "$OUT/report.md"; exit 1; }
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed $(ls .whl/*.whl | wc -l) wheels into $SITE in $(( $(date +%s) - start )) s"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "not installing .whl/ (made for the GPU machine's CPython 3.12; $PY is $pyver, or there are none):"
  echo "using the packages already importable by $PY"
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
"$PY" experiments/gpu/run_checks.py --out "$OUT" --budget-s "${KIT_BUDGET_S:-450}" "$@"
rc=$?
echo "kit finished in $(( $(date +%s) - start )) s (exit $rc); report: $OUT/report.md"
exit $rc
