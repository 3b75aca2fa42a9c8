#!/usr/bin/env bash
# The wheels `python benchmarks/gpu_check.py` installs on a GPU machine that has torch,
# transformers, accelerate and peft but no network (docs/gpu-check.md, "Wheels"). Run it here, on
# a machine with network; carry the folder with the repository; gpu_check.py installs from it
# alone (pip install --no-index --find-links) what the machine lacks.
#
#   benchmarks/gpu_wheels.sh                 # into benchmarks/.gpu_wheels/ (ignored by git)
#   GPU_WHEELS_DIR=DIR GPU_WHEELS_PYTHONS="3.12 3.11" PYTHON=.venv/bin/python benchmarks/gpu_wheels.sh
#
# What goes in (versions: the ones the CPU stack is tested with):
# - DeepSpeed 0.19.8 built as a wheel with DS_BUILD_OPS=0: no CUDA op is compiled here; ZeRO-2/3
#   with torch's AdamW needs none (an op asked for later would be JIT-built with ninja);
# - DeepSpeed's dependencies torch and transformers do not bring (binary ones for each Python of
#   GPU_WHEELS_PYTHONS, manylinux x86_64): pydantic and its core, msgpack, ninja, hjson, einops,
#   py-cpuinfo, and the small pure ones pip may want newer (typing-extensions, annotated-types,
#   typing-inspection, packaging, psutil);
# - the MATH graders vineppo imports lazily (math-verify, latex2sympy2_extended, its antlr4
#   runtime, pylatexenc: an sdist, built into a wheel here), for tests and evaluation there.
# Not `datasets` (vineppo imports it only to read the hub; ~40 MB with pyarrow) and not vLLM
# (hundreds of MB, and it pins another torch).
#
# Default Pythons: 3.12 (the GPU machine's) and this machine's own (for the rehearsal in a fresh
# virtual environment here). The folder must stay under 64 MiB (what is carried to the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${GPU_WHEELS_DIR:-benchmarks/.gpu_wheels}
LOCAL_PY=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PYTHONS=${GPU_WHEELS_PYTHONS:-"3.12 $LOCAL_PY"}
LIMIT_MIB=64

DEEPSPEED="deepspeed==0.19.8"
BINARY="pydantic-core==2.50.5 msgpack==1.2.4 ninja==1.13.2 psutil==7.2.2"
PURE="pydantic==2.14.4 hjson==3.1.0 einops==0.8.2 py-cpuinfo==9.0.0 typing-extensions==4.16.0
annotated-types==0.8.0 typing-inspection==0.4.5 packaging==26.4
math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2"
SDIST="pylatexenc==2.11"

tmp="$OUT.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
echo "gpu_wheels: $DEEPSPEED (DS_BUILD_OPS=0)"
# build isolation on: pip fetches setuptools for the build; DeepSpeed's setup.py runs without torch
DS_BUILD_OPS=0 "$PYTHON" -m pip wheel --no-cache-dir --no-deps --quiet -w "$tmp" "$DEEPSPEED"
echo "gpu_wheels: $SDIST (sdist -> wheel)"
"$PYTHON" -m pip wheel --no-deps --quiet -w "$tmp" $SDIST
for py in $PYTHONS; do
  echo "gpu_wheels: binary wheels for Python $py, manylinux x86_64"
  # --platform may be given several times: pip then accepts a wheel tagged with any of them
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --quiet -d "$tmp" --python-version "$py" \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 --platform manylinux_2_5_x86_64 \
    --platform manylinux1_x86_64 $BINARY
done
echo "gpu_wheels: pure-Python wheels"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --quiet -d "$tmp" $PURE
size=$(du -sm "$tmp" | cut -f1)
if [ "$size" -gt "$LIMIT_MIB" ]; then
  echo "gpu_wheels: $tmp holds $size MiB, more than the $LIMIT_MIB MiB that can be carried" >&2
  exit 1
fi
rm -rf "$OUT"
mv "$tmp" "$OUT"
echo "gpu_wheels: $(ls "$OUT" | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT"
ls "$OUT"
