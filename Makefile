# The two commands of the README:
#   make quickstart   set up .venv, install shipml, run the churn example end to end
#   make test         set up .venv with the dev tools, run lint, types, layers and every test
# and the one that moves the versions they install:
#   make lock         the newest versions pyproject.toml allows, frozen into requirements/constraints.txt, then the tests
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# Every install of shipml here takes the exact versions the tests last passed with (make lock refreshes them);
# the bench's peers (.venv-bench, .venv-bench-drift) keep pins of their own.
LOCK   := requirements/constraints.txt
LOCK_VENV := .venv-lock

.PHONY: quickstart test test-scale k8s-rules soak lint stats unit integration bench clean system-deps lock

# The installs go through uv (PyPI's, pinned in the lock like every other tool) when it installs: the same pinned
# versions as pip, downloaded in parallel, in about a sixth of pip's time (the biggest part of a fresh `make test`'s
# setup). pip, upgraded, is the fallback wherever uv cannot be installed or fails.
# Bytecode: the commands here write it as Python does by default, on first import, whatever the calling shell's
# PYTHONDONTWRITEBYTECODE says: where it is set, every process would compile every module it imports from source
# again (the test suite took twice as long). So .venv is not compiled whole at install (uv's --compile-bytecode:
# about 30 s of a fresh `make test`'s 40 s of setup, most of it modules nothing imports); the bench's peers are,
# as their cold starts are measured.
unexport PYTHONDONTWRITEBYTECODE
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) uv || $(BIN)/python -m pip install --quiet --upgrade pip

# $(call INSTALL,args): pip install args, by uv if it is there (pip if uv fails); a comma in args is $(comma).
# $(call INSTALL_INTO,venv,args): the same into another environment (the bench's peers), by .venv's uv.
comma := ,
INSTALL_INTO = { [ -x $(BIN)/uv ] && $(BIN)/uv pip install --quiet $(3) --python $(1)/bin/python $(2); } \
	  || $(1)/bin/pip install --quiet $(2)
INSTALL = $(call INSTALL_INTO,$(VENV),$(1),)

$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(call INSTALL,-c $(LOCK) -e .)
	touch $@

$(DEV_STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(call INSTALL,-c $(LOCK) -e '.[dev]')
	touch $@ $(STAMP)

# The scale lane and the bench also need the spark extra (pyspark, some 400 MB): never installed by make test.
SPARK_STAMP := $(VENV)/.installed-spark
$(SPARK_STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(call INSTALL,-c $(LOCK) -e '.[dev$(comma)spark]')
	touch $@ $(DEV_STAMP) $(STAMP)

quickstart: $(STAMP)
	$(BIN)/shipml quickstart

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

# Real servers the tests start themselves: PostgreSQL, Prometheus, Alertmanager and haproxy from Debian's packages,
# Chromium (headless, for the monitoring report), and podman with runc and mmdebstrap (the image's test builds its
# base from Debian's packages and runs the container; uidmap, fuse-overlayfs and slirp4netns for rootless podman),
# Java for Spark (openjdk-17-jre-headless, when no java is on the PATH), and strace (the store's sync before an
# answer: tests/scale/test_host_writer.py and bench/commit_log.py).
# Installed here when missing and possible (root + apt-get); otherwise their tests skip and say why. The tests start
# their own servers on free ports, so a system service that a package starts on install is stopped again (nothing
# left listening on 9090/9093); recommends are skipped (prometheus would pull in a node exporter on 9100).
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "could not install postgresql: its tests will skip"; \
	  else echo "postgresql is not installed and this is not root: its tests will skip"; fi; \
	fi
	@missing=""; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium fonts-liberation"; \
	command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	command -v podman >/dev/null 2>&1 || missing="$$missing podman uidmap fuse-overlayfs slirp4netns"; \
	command -v runc >/dev/null 2>&1 || missing="$$missing runc"; \
	command -v mmdebstrap >/dev/null 2>&1 || missing="$$missing mmdebstrap"; \
	command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	command -v strace >/dev/null 2>&1 || missing="$$missing strace"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	      || echo "could not install$$missing: their tests will skip"; \
	    for svc in prometheus prometheus-alertmanager haproxy; do \
	      case " $$missing " in *" $$svc "*) service $$svc stop >/dev/null 2>&1 || true;; esac; \
	    done; \
	  else echo "not installed and this is not root:$$missing: their tests will skip"; fi; \
	fi

# Every test in one pytest run spread over TEST_WORKERS processes (pytest-xdist, --dist loadscope): each module
# runs whole on one worker, so its trained project and servers are made once (loadgroup would spread unit
# tests finer, but with pytest 9.2 it silently stops grouping: pytest-xdist issue 1386); tests/conftest.py orders
# the modules. Four workers, two a core, as their tests also wait on servers and timers. Six were no faster
# (pytest 503 s against 490 s, one commit, a quiet machine): sampled from /proc, all the run's processes together
# use nearly both cores (each pytest worker imports every test module to collect, and the commands and servers the
# tests start do real work). The 25 slowest tests are printed. The scale lane (tests/scale: the 5-minute soak,
# fleets, outages) is `make test-scale`.
# Lint (ruff, mypy, lint-imports: about 20 s of one core) runs beside the tests: its output is printed after
# theirs, and either failing fails `make test` (`make lint` runs it alone).
# One collection first, beside lint: it writes the bytecode of what the tests import and pytest's rewritten test
# modules once (20 s of one core on a clean clone), so each worker's own collection takes 6 s instead of 20 (four
# workers importing at the same moment would each compile and rewrite all of it).
TEST_WORKERS ?= 4
test: $(DEV_STAMP) system-deps
	@lint_log=$$(mktemp); $(MAKE) --no-print-directory lint >"$$lint_log" 2>&1 & lint_pid=$$!; \
	$(BIN)/pytest --collect-only -q -m "not scale" -p no:cacheprovider >/dev/null 2>&1; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder \
	  -m "not scale" --durations=25 -p no:cacheprovider; tests=$$?; \
	wait $$lint_pid; linted=$$?; cat "$$lint_log"; rm -f "$$lint_log"; \
	if [ $$linted -ne 0 ]; then echo "make test: lint failed (above)"; fi; \
	[ $$tests -eq 0 ] && [ $$linted -eq 0 ]

# The scale lane: tests/scale, each test minutes long or a fleet of real components (Postgres with many writers,
# an MLflow server on Postgres and moto's S3, outages under load). Here a missing component fails its test instead
# of skipping it (SHIPML_REQUIRE_COMPONENTS=1). One test at a time: each one loads the machine itself.
SOAK_SECONDS ?= 300
test-scale: $(SPARK_STAMP) system-deps
	SHIPML_SOAK_SECONDS=$(SOAK_SECONDS) SHIPML_REQUIRE_COMPONENTS=1 $(BIN)/pytest tests/scale -m scale --durations=0 -p no:cacheprovider

# deploy/k8s/prometheusrule.yaml (the Prometheus Operator's copy of the alerting rules) from
# deploy/prometheus/rules.yml, the one source: run after editing rules.yml (a test checks the two agree).
k8s-rules: $(STAMP)
	$(BIN)/python deploy/k8s/render_rules.py

soak: $(DEV_STAMP)
	SHIPML_SOAK_SECONDS=1800 $(BIN)/pytest -m soak -p no:cacheprovider

# The statistics suite ten times larger than in `make test` (SHIPML_STATS_SCALE multiplies every simulation's
# replicates): the figures of docs/statistics.md at a tighter Monte-Carlo error.
stats: $(DEV_STAMP)
	SHIPML_STATS_SCALE=10 $(BIN)/pytest -n 2 tests/statistics -p no:cacheprovider

unit: $(DEV_STAMP)
	$(BIN)/pytest -n 2 tests/unit

integration: $(DEV_STAMP)
	$(BIN)/pytest -m integration

# The peers (LitServe, BentoML) live in their own environment, never in shipml's dependencies;
# they load the same pipeline, so scikit-learn and numpy are pinned to the versions of .venv.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: $(DEV_STAMP)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(call INSTALL_INTO,$(BENCH_VENV),"scikit-learn==$$($(BIN)/python -c 'import sklearn; print(sklearn.__version__)')" \
	  "numpy==$$($(BIN)/python -c 'import numpy; print(numpy.__version__)')" pandas joblib litserve,--compile-bytecode)
	$(call INSTALL_INTO,$(BENCH_VENV),bentoml "scikit-learn==$$($(BIN)/python -c 'import sklearn; print(sklearn.__version__)')" \
	  "numpy==$$($(BIN)/python -c 'import numpy; print(numpy.__version__)')",--compile-bytecode)
	touch $@

# Evidently, the drift bench's peer, in an environment of its own: evidently 0.7.23 imports a pandas 2 internal
# (pandas.core.dtypes.common.infer_dtype_from_object) that pandas 3, which the serving peers get, no longer has.
# It gets the frames as files (bench/drift.py), so its numpy and pandas need not match .venv's.
BENCH_DRIFT_VENV := .venv-bench-drift
$(BENCH_DRIFT_VENV)/.installed: $(DEV_STAMP)
	$(PYTHON) -m venv $(BENCH_DRIFT_VENV)
	$(call INSTALL_INTO,$(BENCH_DRIFT_VENV),"evidently==0.7.23" "pandas==2.3.3",--compile-bytecode)
	touch $@

bench: $(SPARK_STAMP) $(BENCH_VENV)/.installed $(BENCH_DRIFT_VENV)/.installed system-deps
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	@$(BIN)/python -m compileall -q -j 0 src $(VENV)/lib >/dev/null  # cold starts are measured: compiled first
	$(BIN)/python bench/serve.py --peers-python $(BENCH_VENV)/bin/python
	$(BIN)/python bench/drift.py --evidently-python $(BENCH_DRIFT_VENV)/bin/python
	$(BIN)/python bench/store_scale.py
	$(BIN)/python bench/store_retention.py
	$(BIN)/python bench/spark.py
	$(BIN)/python bench/commit_log.py

# The lock: what pyproject.toml allows, resolved afresh in an empty environment (Python 3.11, the version the tests
# run on) and frozen exactly; then .venv is rebuilt from it and every test runs. Commit the file when they pass.
# The xgboost extra is not part of the test environment, so it is not pinned (its test skips without it).
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet -e '.[dev,spark]'
	@mkdir -p $(dir $(LOCK))
	{ echo "# The exact versions make quickstart and make test install (pip install -c $(LOCK)): the newest that"; \
	  echo "# pyproject.toml allowed when \`make lock\` last ran, which then ran every test with them. Do not edit by"; \
	  echo "# hand: run make lock. Made with Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version(), "on", platform.system(), platform.machine())')."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable --exclude shipml; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV) $(VENV)
	$(MAKE) test

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(BENCH_DRIFT_VENV) $(LOCK_VENV) .shipml .pytest_cache .mypy_cache .ruff_cache
