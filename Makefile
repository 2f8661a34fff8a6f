# ganlab: `make run` trains the default experiment, `make test` runs the tests; both set up first.
# A GPU user picks a CUDA build of torch, e.g.:
#   make setup TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
ARGS ?=
BIN := $(VENV)/bin

.PHONY: setup run test test-fast fuzz mutation sweep tensorboard bench bench-images docs reproduce-toy reproduce-stacked validate-stacked clean

setup: $(VENV)/.installed

# torch first, pinned: an unpinned torch pulled in by the package would fetch a multi-GB CUDA build.
# The ray extra (hydra/launcher=ray, tests/test_ray_launcher.py) adds 71 s and 363 MB to the venv here, torch untouched.
# torch-fidelity last, with --no-deps: tests/test_fid_reference.py checks ganlab's FID Inception against its
# implementation; it declares torchvision (whose wheels do not run with the CPU torch), for which pip would replace
# the pinned torch. What the test's modules of it need besides is ganlab's or the fidcheck extra's.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,joblib,submitit,optuna,fidcheck,ray]"
	$(BIN)/pip install --quiet --no-deps torch-fidelity==0.4.0
	touch $@

run: setup
	$(BIN)/ganlab train $(ARGS)

# Two worker processes (pytest-xdist): the suite is CPU-bound and the machine has 2 cores.
# One BLAS thread per worker: OpenBLAS's own threads spin against the other worker's (tests/conftest.py).
# The 25 slowest tests close the output: the suite is to stay under 10 minutes on 2 cores, and CI's log says where it goes.
test: setup
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --durations=25 $(ARGS)

# The same without the tests marked slow (about a third of the suite's time): for quick iterations.
test-fast: setup
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 -m "not slow" $(ARGS)

# The property-based tests (tests/test_fuzz_*.py) with many fresh random examples instead of `make test`'s few fixed ones.
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -n 2 tests/test_fuzz*.py $(ARGS)

# Mutation testing (mutmut, pyproject.toml [tool.mutmut]) of the modules whose numbers the tables publish: the
# score per module and every surviving mutant (docs/testing.md). Not part of `make test`: about an hour on 2 cores.
# Some modules only: make mutation ARGS="verdicts confusion modes"; the last results again: ARGS=--summary.
mutation: setup
	$(BIN)/python scripts/mutation.py $(ARGS)

sweep: setup
	$(BIN)/ganlab train -m loss=nsgan,wgan_gp seed=0,1,2 $(ARGS)

tensorboard: setup
	$(BIN)/tensorboard --logdir outputs $(ARGS)

bench: setup
	$(BIN)/python scripts/bench_loop.py $(ARGS)

# The collapsing baselines (10 seeds), then the VEEGAN / PacGAN 2-D rows (5 seeds): docs/results/toy.md.
# Parts and knobs: make reproduce-toy ARGS="pacgan" (see scripts/reproduce_toy.sh).
reproduce-toy: setup
	scripts/reproduce_toy.sh $(ARGS)

# Stacked Fashion-MNIST: DCGAN, the image remedies and their controls over 5 seeds: docs/results/stacked.md.
reproduce-stacked: setup
	scripts/reproduce_stacked.sh $(ARGS)

# The Stacked mode counts on real test-split triples with known modes (needs the cached mode classifier):
# docs/results/stacked_validation.md, which reproduce-stacked puts into docs/results/stacked.md. 36 cases of
# 26,000 samples: 24.5 min measured here on 2 CPU cores (and 2.5 more the first time, for the confusion matrices).
validate-stacked: setup
	$(BIN)/python scripts/validate_stacked_counts.py --out docs/results/stacked_validation.md $(ARGS)

# Image training speed under each speed switch, against a bare PyTorch loop (run it on a GPU).
bench-images: setup
	$(BIN)/python scripts/bench_images.py $(ARGS)

# The docs' metric lists (docs/cli.md, docs/images.md), from the registry's descriptions (ganlab/metrics/__init__.py).
docs: setup
	$(BIN)/python -m ganlab.metrics.docs

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
