# bash scripts/gpu_check.sh [--cpu] [--out FILE]
# The prepared device check (under 8 minutes on one GPU): tftrain's resnet throughput in float32,
# mixed_bfloat16 and mixed_float16, XLA off/on, steps per execution 1/auto; model.fit on the same
# model; peak GPU memory; 1 vs 2 logical devices under trainer.strategy=mirrored (loss agreement);
# the default `python -m tftrain`. Prints a markdown table (--out FILE writes it too); exit status
# 0 when every row ran. --cpu: shrunk, GPUs hidden, about 1.5 minutes on 2 cores (the tests run it).
# Every row's meaning: scripts/gpu_check.py. Uses `python` from the active environment.
set -euo pipefail
# The script finds the repository itself (its children run there), so --out FILE stays relative
# to the directory this is called from.
exec python "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/gpu_check.py" "$@"
