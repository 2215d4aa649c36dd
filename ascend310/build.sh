#!/bin/bash
# Build the Ascend 310 inference program.
#   bash build.sh            (MINDSPORE_PATH defaults to the installed mindspore package)
# Needs the Ascend toolkit and MindSpore's inference headers (include/api/model.h). Without them
# only the host-side helpers and their test are built.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${MINDSPORE_PATH:-}" ]; then
  MINDSPORE_PATH=$(python3 -c "import mindspore, os; print(os.path.dirname(mindspore.__file__))" 2>/dev/null || true)
fi
if [ -d "${ASCEND_HOME:-/usr/local/Ascend}/ascend-toolkit/latest" ]; then
  export LD_LIBRARY_PATH="${ASCEND_HOME:-/usr/local/Ascend}/ascend-toolkit/latest/lib64:${LD_LIBRARY_PATH:-}"
fi
mkdir -p build
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMINDSPORE_PATH="${MINDSPORE_PATH}"
cmake --build build -j"$(nproc)"
./build/test_utils
if [ -x build/roadseg_310 ]; then
  echo "built ascend310/build/roadseg_310"
else
  echo "note: roadseg_310 not built: MindSpore inference headers not found under '${MINDSPORE_PATH}'" >&2
fi
