#!/usr/bin/env bash
# The first GPU run, prepared: every GPU figure and check docs/benchmarks.md still lacks, in one
# command that stops itself within its time budget and writes ONE summary file (and one full log
# beside it), also when a step fails, runs out of time or the script is stopped.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--budget SECONDS] [--summary FILE] [--work DIR]
#
# On the GPU machine, from the repository root, after `bash benchmarks/gpu_bundle.sh` here and
# with build/gpu carried there:
#   bash benchmarks/gpu_check.sh          # summary: $OUT/gpu_check/summary.md ($OUT unset: build/gpu_check/)
# On a CPU, to check the script itself:
#   bash benchmarks/gpu_check.sh --dry-run
#
# The steps, most important first; each runs under `timeout` (its cap, or what is left of the
# budget), and none starts when less than its minimum is left before the deadline:
#   cuda-tests              every test that needs CUDA (benchmarks/cuda_tests.py selects them), no -x
#   pacgan                  benchmarks/pacgan_gpu.py: PacGAN's Table 1, the rows not yet done that fit a session
#                           (--fit), checkpointed (continue in the next call: python3 benchmarks/pacgan_gpu.py
#                           --device cuda --budget SECONDS --out build/gpu-check-work/pacgan --run-only); the steps
#                           below were all measured on 2026-11-30 and are skipped for time unless --budget is raised
#   torchrun-nccl           `gankit train --nproc 1` on CUDA: torchrun, NCCL, the DDP code path
#   throughput-b128         benchmarks/throughput.py at batch 128: tf32 eager, +graphs, bf16, bf16+graphs
#   vs-examples             benchmarks/vs_examples.py speed mode against pytorch/examples dcgan/main.py
#   throughput-b1024        the same as throughput-b128 at batch 1024
#   ddp-overhead            benchmarks/ddp_overhead.py: plain against torchrun with 1 process
#   vs-examples-bf16-graphs vs-examples with gankit in bf16 with the CUDA graph
#   parity                  benchmarks/parity.py, fp32 eager against bf16 + graph, 2 seeds (cut down)
#
# --dry-run runs every step on the CPU at toy sizes (fake Fashion-MNIST in the work folder, the
# CUDA tests collected and skipped, torchrun with gloo); a step that cannot run without the GPU
# machine's packages is marked SKIPPED with the reason. The summary always shows the exact
# command each step runs on the GPU.
#
# Environment: PY (default .venv/bin/python when present, else python3), GPU_CHECK_BUDGET
# (seconds, default 540: the device lends 10 minutes per command, 15 in all with its start).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

dry=0
budget=${GPU_CHECK_BUDGET:-540}
summary=""
work=""
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry=1 ;;
        --budget) budget=${2:?--budget needs seconds}; shift ;;
        --budget=*) budget=${1#*=} ;;
        --summary) summary=${2:?--summary needs a file}; shift ;;
        --summary=*) summary=${1#*=} ;;
        --work) work=${2:?--work needs a folder}; shift ;;
        --work=*) work=${1#*=} ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case $budget in '' | *[!0-9]*) echo "gpu_check: --budget must be whole seconds, got '$budget'" >&2; exit 2 ;; esac
if [ -z "$summary" ]; then
    if [ -n "${OUT:-}" ]; then summary=$OUT/gpu_check/summary.md; else summary=$ROOT/build/gpu_check/summary.md; fi
fi
[ -n "$work" ] || work=$ROOT/build/gpu-check-work
if [ -z "${PY:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
mkdir -p "$(dirname "$summary")" "$work" || exit 2
summary=$(cd "$(dirname "$summary")" && pwd)/$(basename "$summary")
work=$(cd "$work" && pwd)
log=$(dirname "$summary")/gpu_check.log
: >"$log"
RESERVE=10 # seconds kept for the summary after the last step

export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
bundle=$ROOT/build/gpu
if [ $dry = 1 ]; then
    # A fake Fashion-MNIST (random images and labels) and a cache of its own: the real commands'
    # shapes at toy sizes, nothing read from or written to the user's data or cache.
    export GANKIT_DATA=$work/fashion-mnist XDG_CACHE_HOME=$work/cache
    "$PY" - "$GANKIT_DATA" <<'EOF' || { echo "gpu_check: cannot write the fake data" >&2; exit 2; }
import gzip, struct, sys
from pathlib import Path
import numpy as np
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
def idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
for split, n in (("train", 256), ("t10k", 64)):
    idx(out / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    idx(out / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
EOF
else
    export GANKIT_DATA=$bundle/fashion-mnist XDG_CACHE_HOME=$bundle/cache
fi

machine=$("$PY" - <<'EOF' 2>&1
import os, platform, torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
print(f"{gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); Python {platform.python_version()}; "
      f"{os.cpu_count()} CPU cores")
EOF
)
cuda=0
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && cuda=1
started=$(date -u '+%Y-%m-%d %H:%M:%S')

NAMES=() WHAT=() STATUS=() SECS=() RESULT=() REAL=() RAN=()
stopped="" current="" runner=""

result_lines() { # the lines of a step's output that carry its result
    grep -aE '^(ratio|parity:|FAILED |ERROR |NCCL version|graph check|tf32:|fp32:|the run:|stopped after|wrote .*table)|^ *(GAN|PacGAN[0-9]) |^[0-9]+ (passed|failed|skipped|deselected|errors?)|^# [AB] seed|^\| |^ *(plain|ddp[0-9]+): |gankit: (done|speed|CUDA graph|training )|^gankit: error' "$1" |
        sed 's/\r/\n/g' | grep -av '^$' | tail -n 40
}

write_summary() {
    local tmp=$summary.part i
    {
        echo "# GPU check: benchmarks/gpu_check.sh"
        echo
        if [ $dry = 1 ]; then
            echo "- mode: **dry run** on this machine (toy sizes, fake data; each step's GPU command is shown as it runs on the GPU)"
        else
            echo "- mode: GPU run"
        fi
        echo "- started: $started UTC; machine: $machine"
        echo "- budget: $budget s; used: $SECONDS s${stopped:+; **stopped early**: $stopped}"
        echo "- full output of every step: $(basename "$log") beside this file"
        echo "- data: GANKIT_DATA=$GANKIT_DATA$([ -d "$GANKIT_DATA" ] || echo ' (**missing**: run benchmarks/gpu_bundle.sh and carry build/gpu)'); XDG_CACHE_HOME=$XDG_CACHE_HOME"
        if [ $dry = 0 ] && [ $cuda = 0 ]; then
            echo "- **no CUDA GPU visible: nothing was run** (on a CPU use --dry-run)"
        fi
        echo
        echo "| step | what | status | seconds | result |"
        echo "| --- | --- | --- | --- | --- |"
        for i in "${!NAMES[@]}"; do
            echo "| ${NAMES[$i]} | ${WHAT[$i]} | ${STATUS[$i]} | ${SECS[$i]} | ${RESULT[$i]//|/\\|} |"
        done
        for i in "${!NAMES[@]}"; do
            echo
            echo "## ${NAMES[$i]}: ${STATUS[$i]}"
            echo
            echo "On the GPU:"
            echo
            echo "    ${REAL[$i]}"
            if [ $dry = 1 ] && [ -n "${RAN[$i]}" ] && [[ ${STATUS[$i]} != SKIPPED* ]]; then
                echo
                echo "This dry run ran:"
                echo
                echo "    ${RAN[$i]}"
            fi
            if [ -s "$work/${NAMES[$i]}.out" ]; then
                echo
                echo "Its result lines:"
                echo
                result_lines "$work/${NAMES[$i]}.out" | sed 's/^/    /'
                if [ "${STATUS[$i]}" != ok ]; then
                    echo
                    echo "The last lines of its output:"
                    echo
                    sed 's/\r/\n/g' "$work/${NAMES[$i]}.out" | grep -av '^$' | tail -n 25 | sed 's/^/    /'
                fi
            fi
        done
    } >"$tmp" && mv "$tmp" "$summary"
}

on_signal() { # stop the step in progress (timeout passes the signal on to its command), then write
    stopped="stopped by SIG$1 after $SECONDS s"
    if [ -n "$runner" ]; then
        kill -TERM "$runner" 2>/dev/null
        wait "$runner" 2>/dev/null
        [ -n "$current" ] && STATUS[$current]="STOPPED (SIG$1)"
    fi
    write_summary
    exit $((128 + $2))
}
trap 'on_signal TERM 15' TERM
trap 'on_signal INT 2' INT

# step NAME WHAT CAP MIN GPU_COMMAND DRY_COMMAND [WHY_NOT_IN_A_DRY_RUN]
step() {
    local name=$1 what=$2 cap=$3 min=$4 real=$5 dry_cmd=${6:-} why=${7:-}
    local cmd=$real left=$((budget - SECONDS - RESERVE)) status result="" t rc begin i
    [ $dry = 1 ] && cmd=$dry_cmd
    NAMES+=("$name") WHAT+=("$what") REAL+=("$real") RAN+=("$cmd")
    i=$((${#NAMES[@]} - 1))
    SECS[$i]=0 RESULT[$i]=""
    if [ $dry = 0 ] && [ $cuda = 0 ]; then
        STATUS[$i]="SKIPPED (no CUDA GPU)"
    elif [ -n "$why" ]; then
        STATUS[$i]="SKIPPED ($why)"
    elif [ $left -lt "$min" ]; then
        STATUS[$i]="SKIPPED (out of time: $left s left, needs $min)"
    else
        t=$((cap < left ? cap : left))
        STATUS[$i]="running (limit $t s)"
        write_summary
        printf '\n### %s (limit %s s): %s\n' "$name" "$t" "$cmd" >>"$log"
        echo "gpu_check: $name (limit $t s)" >&2
        begin=$SECONDS current=$i
        # In the background, so that a signal to this script is handled at once (see on_signal).
        # STEP_LIMIT: the step's own limit, for a command that stops itself within it (pacgan)
        STEP_LIMIT=$t timeout --kill-after=10 "$t" bash -c "$cmd" </dev/null >"$work/$name.out" 2>&1 &
        runner=$!
        wait "$runner"
        rc=$?
        runner="" current=""
        SECS[$i]=$((SECONDS - begin))
        cat "$work/$name.out" >>"$log"
        case $rc in
            0) status=ok ;;
            3) status="checkpointed at its budget" ;; # pacgan_gpu.py: the next call continues (--run-only)
            124 | 137) status="TIMEOUT after $t s" ;;
            *) status="FAILED (exit status $rc)" ;;
        esac
        STATUS[$i]=$status
        result=$(result_lines "$work/$name.out" |
            grep -aE '^(ratio|parity:|NCCL version|graph check|tf32:|fp32:|the run:|stopped after|wrote .*table)|^[0-9]+ (passed|failed|skipped|deselected|errors?)|gankit: (done|CUDA graph)|^gankit: error' |
            tail -n 6 | tr '\n' ';' | sed 's/;$//; s/;/; /g')
        RESULT[$i]=${result:0:400}
    fi
    write_summary
}

# What each step runs. Sizes: enough iterations for a steady rate (the rates are measured after
# the warm-up), few enough that the whole list fits the budget on an H100/H200. A dry run shows
# the GPU commands as they run there: python3 (the GPU machine has no .venv), the default work folder.
if [ $dry = 1 ]; then gpy=python3 gwork=build/gpu-check-work; else gpy=$PY gwork=$work; fi
ex=build/gpu/pytorch-examples
tiny_ex=""
for candidate in "$bundle/pytorch-examples" "$ROOT/build/pytorch-examples"; do
    [ -f "$candidate/dcgan/main.py" ] && { tiny_ex=$candidate; break; }
done
vs_why=""
if [ $dry = 1 ]; then
    if [ -z "$tiny_ex" ]; then
        vs_why="dry run: no pytorch/examples checkout (build/gpu/pytorch-examples or build/pytorch-examples)"
    elif ! "$PY" -c 'import torchvision' 2>/dev/null; then
        vs_why="dry run: the example needs torchvision, which $PY cannot import"
    fi
fi
if [ $dry = 0 ] && [ $cuda = 1 ] && [ ! -d "$GANKIT_DATA" ]; then
    echo "gpu_check: no $GANKIT_DATA: run 'bash benchmarks/gpu_bundle.sh' before, and carry build/gpu" >&2
fi
tests="-m pytest -p cuda_tests -p no:cacheprovider -q -rs tests"  # benchmarks/cuda_tests.py: the CUDA tests only
train="-m gankit train --nproc 1 --data fashion-mnist"
settings="--settings tf32,tf32+graphs,bf16,bf16+graphs"
vs="$gpy benchmarks/vs_examples.py --examples $ex --device cuda --workers 16 --iterations 300 --warmup 50"
vs_dry="$PY benchmarks/vs_examples.py --examples $tiny_ex --device cpu --workers 1 --batch-size 8 --iterations 4 --warmup 1 --train-images 256"
graphs_args='--gankit-args "--precision bf16 --cuda-graphs auto"'

step cuda-tests "every test that needs CUDA, no -x" 200 30 \
    "PYTHONPATH=benchmarks:\$PYTHONPATH $gpy $tests" "PYTHONPATH=benchmarks:\$PYTHONPATH $PY $tests"
# PacGAN's Table 1 (issue 19) takes whatever the budget leaves: every step below it was measured
# on 2026-11-30 (docs/benchmarks.md) and is skipped for time. Its checkpoints stay in the work
# folder: the next call continues it (docs/theory.md section 5, "For the next GPU session").
# --fit: the seconds of training one session's two calls leave (15 device minutes less the start,
# the CUDA tests, the checks and the second call's start-up); PACGAN_FIT changes it.
step pacgan "PacGAN's Table 1, batched + CUDA graph, as far as the budget goes" 9999 120 \
    "$gpy benchmarks/pacgan_gpu.py --device cuda --budget \$((STEP_LIMIT - 20)) --fit \${PACGAN_FIT:-650} --out $gwork/pacgan" \
    "$PY benchmarks/pacgan_gpu.py --device cpu --budget \$((STEP_LIMIT - 20)) --packs 1 --iterations 10 --score-every 5 --out $work/pacgan"
step torchrun-nccl "torchrun, 1 process, NCCL" 90 30 \
    "NCCL_DEBUG=VERSION $gpy $train --device cuda --batch-size 128 --max-images 64000 --out $gwork/torchrun --overwrite" \
    "$PY $train --device cpu --g-width 8 --d-width 8 --batch-size 8 --max-images 64 --out $work/torchrun --overwrite"
step throughput-b128 "against the classic loop, batch 128" 120 45 \
    "$gpy benchmarks/throughput.py --device cuda --batch-size 128 --workers 16 --warmup 50 --iterations 300 $settings" \
    "$PY benchmarks/throughput.py --device cpu --quick --batch-size 4 --workers 1 $settings"
step vs-examples "against pytorch/examples dcgan, speed" 100 45 "$vs --out $gwork/vs" "$vs_dry --out $work/vs" "$vs_why"
step throughput-b1024 "against the classic loop, batch 1024" 120 45 \
    "$gpy benchmarks/throughput.py --device cuda --batch-size 1024 --workers 16 --warmup 10 --iterations 60 $settings" \
    "$PY benchmarks/throughput.py --device cpu --quick --batch-size 8 --workers 1 $settings"
step ddp-overhead "plain against torchrun with 1 process" 90 40 \
    "$gpy benchmarks/ddp_overhead.py --device cuda --nproc 0 --batch-size 128" \
    "$PY benchmarks/ddp_overhead.py --device cpu --nproc 0 --quick --batch-size 8"
step vs-examples-bf16-graphs "the same, gankit in bf16 with the CUDA graph" 80 40 \
    "$vs --out $gwork/vs-graphs $graphs_args" "$vs_dry --out $work/vs-graphs $graphs_args" "$vs_why"
step parity "fp32 eager against bf16 + graph, FID over 2 seeds (cut down)" 600 60 \
    "$gpy benchmarks/parity.py --device cuda --seeds 0,1 --max-images 64000 --eval-samples 5000 --out $gwork/parity" \
    "$PY benchmarks/parity.py --device cpu --common '--data fashion-mnist --g-width 4 --d-width 4 --batch-size 8' --a '--precision fp32' --b '--precision bf16' --seeds 0,1 --max-images 32 --eval-samples 64 --out $work/parity"

write_summary
echo "gpu_check: summary in $summary ($SECONDS s)" >&2
for s in "${STATUS[@]}"; do
    case $s in ok | SKIPPED* | "checkpointed at its budget") ;; *) exit 1 ;; esac
done
[ $dry = 1 ] || [ $cuda = 1 ] || exit 2
exit 0
