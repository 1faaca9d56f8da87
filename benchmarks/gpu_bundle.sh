#!/usr/bin/env bash
# What a GPU machine without network needs for the GPU benchmarks, gathered into build/gpu/
# (about 32 MB): Fashion-MNIST's four .gz files, the cached feature classifier (so that no
# machine retrains it: its weights differ in the last digits between machines, see
# docs/evaluation.md) and pytorch/examples' dcgan/main.py with the commit it came from.
#
#   bash benchmarks/gpu_bundle.sh [EXAMPLES_CHECKOUT]    # default: build/pytorch-examples
#
# There, from the repository root, with build/gpu carried, the first command is
#   bash benchmarks/gpu_check.sh        # every GPU check, within 540 s; summary in $OUT/gpu_check/
# which sets the variables below itself; for the other commands of docs/benchmarks.md:
#   export GANKIT_DATA=$PWD/build/gpu/fashion-mnist XDG_CACHE_HOME=$PWD/build/gpu/cache PYTHONPATH=$PWD/src
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
examples=${1:-build/pytorch-examples}
out=build/gpu
if [ ! -f "$examples/dcgan/main.py" ]; then
    echo "gpu_bundle: no $examples/dcgan/main.py; run: git clone https://github.com/pytorch/examples $examples" >&2
    exit 2
fi
rm -rf "$out.part" && mkdir -p "$out.part/fashion-mnist" "$out.part/cache/gankit/classifiers" "$out.part/pytorch-examples/dcgan"

# The data: the four files as gankit finds them (Debian's package, GANKIT_DATA or the cache).
"$PY" - "$out.part/fashion-mnist" <<'EOF'
import shutil, sys
from pathlib import Path
from gankit.data import mnist
source = mnist.find_files("fashion-mnist")
if source is None:
    sys.exit("gpu_bundle: Fashion-MNIST not found; run `make data` first")
for split in mnist.FILES.values():
    for stem in split:
        path = next(p for p in (source / stem, source / f"{stem}.gz") if p.is_file())
        shutil.copyfile(path, Path(sys.argv[1]) / path.name)
EOF
# The classifier of the full training split (trained here first if it is not cached yet).
"$PY" - "$out.part/cache/gankit/classifiers" <<'EOF'
import shutil, sys
from gankit.features import classifier
_, info = classifier.load_or_train("fashion-mnist")
shutil.copy(info["file"], sys.argv[1])
print(f"classifier {info['file']} (test accuracy {info['test_accuracy']:.2%})")
EOF
cp "$examples/dcgan/main.py" "$out.part/pytorch-examples/dcgan/"
git -C "$examples" rev-parse HEAD > "$out.part/pytorch-examples/COMMIT" 2>/dev/null || echo unknown > "$out.part/pytorch-examples/COMMIT"
rm -rf "$out" && mv "$out.part" "$out"
du -sh "$out"
