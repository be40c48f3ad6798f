#!/usr/bin/env bash
# Issue 28's device checks, in one command, on a machine with a CUDA GPU (none was lent while this was built,
# so no GPU figure in docs/scale.md comes from here yet):
#
#     bash benchmarks/gpu_check.sh            # PYTHON=/path/to/python to choose the interpreter
#
# 1. the CUDA tests (torch backend, embedding, batched SVDs and decompose_model on the GPU == the CPU paths);
# 2. bench_solvers: COMP / NN-OMP / OMP with the torch backend on the GPU vs one bare GEMM there (goal: COMP <= 2x),
#    same supports as Numba;
# 3. bench_neurons: the neuron workload on the GPU vs Numba;
# 4. bench_scale: whole-model inspect of random-init ViT-B-16 and ViT-L-14 with `general` on the GPU
#    (goal: ViT-L-14 <= 20 s end to end, load excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'CUDA', ok); sys.exit(0 if ok else 3)"
echo "== CUDA tests"
"$PY" -m pytest tests/test_torch_backend.py tests/test_decompose.py -m cuda -q -rs
echo "== bench_solvers (ViT-L-14 sized: 24 x 16 heads x 64 directions, 21,740 concepts x 768)"
"$PY" benchmarks/bench_solvers.py --device cuda --signals 24576 --atoms 21740 --width 768 --repeat 2 --sklearn-signals 16
echo "== bench_neurons"
"$PY" benchmarks/bench_neurons.py --device cuda --model ViT-B-16 --atoms 21740 --dtype float32
echo "== bench_scale (new path on the GPU)"
"$PY" benchmarks/bench_scale.py --device cuda --paths new --models ViT-B-16,ViT-L-14 --vocab general
