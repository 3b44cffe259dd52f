# make demo: the whole main job on the embedded synthetic data. make test: lint + tests.
# Both create .venv and install the package; re-installation happens only when setup.py
# changes (the stamp file is older than setup.py). The suite runs on 2 pytest-xdist workers, a
# test file each: alone it keeps about one of this machine's 2 cores busy (user time ~ wall).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint venv runtimes clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The TensorFlow Lite 2.14 runtime's own environment (tflite-runtime 2.14 needs numpy<2), in
# .runtimes/ (FPTFLITE_RUNTIMES_DIR moves it). The only place it is installed: at run time a
# missing environment is reported as not run. The GPU runtime needs a Vulkan driver:
# sudo sh .ci/install_gpu_driver.sh.
RUNTIMES_DIR ?= $(or $(FPTFLITE_RUNTIMES_DIR),.runtimes)
TFLITE214 := $(RUNTIMES_DIR)/tflite2.14
TFLITE214_REQUIREMENTS := tflite-runtime==2.14.0 'numpy<2'

runtimes: $(TFLITE214)/.complete

$(TFLITE214)/.complete:
	$(PYTHON) -m venv --clear $(TFLITE214)
	$(TFLITE214)/bin/python -m pip install --quiet $(TFLITE214_REQUIREMENTS)
	echo "$(TFLITE214_REQUIREMENTS)" > $@

lint: $(STAMP)
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=12 tests

# After the main job, its headline figures (and the Android card's) go to docs/results/demo.json
# and BENCHMARKS.md is rendered again from docs/results/*.json.
demo: $(STAMP)
	$(PY) -m conversion.demo --run_dir=runs/demo
	$(PY) -m benchmarks.report --demo_report=runs/demo/report.json \
	    --model_card=android_demo_assets/model_card.json

clean:
	rm -rf runs .pytest_cache .ruff_cache .runtimes

# The web runtimes (LiteRT.js in headless Chromium) and the pose page: the node packages pinned
# in web/package-lock.json, into web/node_modules; the only place they are installed.
# Chromium itself: apt-get install chromium.
.PHONY: web
web:
	cd web && npm ci --no-audit --no-fund
