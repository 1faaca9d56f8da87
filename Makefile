# Two entry points: `make demo` and `make test`. Both create .venv on first use.
#
# torch: where `nvidia-smi -L` lists a GPU, PyPI's default (CUDA) build; elsewhere the CPU build
# 2.13.0 (small, and the one our CI machines carry on disk). `make demo TORCH=...` overrides
# either. gankit itself supports torch 2.11 to 2.14 (see pyproject.toml).
PYTHON ?= python3
HAS_GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q GPU && echo yes)
GPU_TORCH := torch>=2.11,<2.15
TORCH ?= $(if $(HAS_GPU),$(GPU_TORCH),torch==2.13.0)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gankit-installed
# The demo: the DCGAN of the notes at widths 32, batch 64, for as many images as the loop now trains
# in the ~4 minutes of training the demo took when issue 15 was filed (192,000 images then, at
# 766 images/s; 768,000 now, at ~3,200). Measured over 3 seeds in docs/quality.md.
DEMO_ARGS ?= --data fashion-mnist --model dcgan --g-width 32 --d-width 32 --batch-size 64 --max-images 768000 --snapshot-every 64000 --checkpoint-every 128000

.PHONY: demo test test-fast data venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,tensorboard,export]"
	# torch-fidelity is the reference for the Inception tests. Its dependency torchvision is not
	# needed by the module we compare against, and does not import beside the CPU torch.
	$(BIN)/python -m pip install -q --no-deps torch-fidelity==0.4.0
	touch $(STAMP)

# Debian's dataset-fashion-mnist, installed where apt-get can (as root, when it is missing);
# $(1): the command run when it cannot be installed. `make data` and `make test` both use it.
apt_fashion_mnist = if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's dataset-fashion-mnist"; \
		apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } || \
		$(1); \
	fi

# Debian's chromium for the browser test of `gankit report` (tests/test_report.py), installed as
# above where apt-get can; elsewhere that test skips and says why.
apt_chromium = if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium (for the report's browser test)"; \
		apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } || \
		echo "apt-get could not install chromium; the browser test will skip"; \
	fi

# Fashion-MNIST: Debian's dataset-fashion-mnist where apt-get can install it, else the official
# mirrors (SHA-256 checked) through `gankit data fetch`.
data: $(STAMP)
	@$(call apt_fashion_mnist,echo "apt-get could not install dataset-fashion-mnist; trying the download mirrors")
	$(BIN)/gankit data fetch fashion-mnist

demo: data
	$(BIN)/gankit train $(DEMO_ARGS) --out runs/demo --overwrite
	$(BIN)/gankit sample runs/demo -n 64 --out runs/demo/final-samples.png
	$(BIN)/gankit report runs/demo

# The real-data test (tests/test_data.py) needs Debian's Fashion-MNIST and the report's browser
# test Debian's chromium: installed where that is possible; without root or apt-get the suite
# runs on and those tests skip.
test: $(STAMP)
	@$(call apt_fashion_mnist,true)
	@$(apt_chromium)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

# The inner loop of development: everything but the tests marked slow (torchrun jobs, the SIGKILL
# loop, fuzzing, training runs of more than a few seconds), under 90 s on a 2-core CPU.
test-fast: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs
