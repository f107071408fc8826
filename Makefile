# Two commands do everything on a fresh machine with Python 3.11: `make study` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PARAMS ?= params/quick.yaml
# cells at once (make study JOBS=4); empty: the study's default, the usable cores
JOBS   ?=
# quiet TensorFlow's C++ start-up chatter
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install constraints study test test-jax docs lab bench clean

install: $(VENV)/.installed

# the pinned versions of constraints.txt: a rerun on a fresh machine gets the same environment
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

constraints: install  ## re-pin constraints.txt from the installed environment (after changing pyproject.toml)
	{ sed -n '1,/^#   make constraints/p' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt

study: install  ## run the quick study end to end (offline) and write outputs/quick/report.html
	$(PY) -m samlib study $(PARAMS) $(if $(JOBS),--jobs $(JOBS))

test: install  ## the whole test suite, notebooks included
	$(PY) -m pytest

# the backend-neutral tests, run again on Keras' JAX backend: Keras picks its backend when imported, so
# this is a second pytest process (tests marked tensorflow_only are skipped there)
JAX_TESTS ?= tests/test_sam.py tests/test_looksam.py tests/test_sharpness.py tests/test_precision.py tests/test_lars.py tests/test_custom_models.py
test-jax: install  ## the SAM family's references (and what else runs on JAX) under KERAS_BACKEND=jax
	KERAS_BACKEND=jax $(PY) -m pytest $(JAX_TESTS)

docs: install  ## the documentation site from docs/ and the docstrings into site/; strict: a warning (a broken link) fails
	$(PY) -m mkdocs build --strict --site-dir site

lab: install  ## JupyterLab on the notebooks with the project's environment
	$(VENV)/bin/jupyter lab notebooks

bench: install  ## samples/s of SGD vs SAM variants
	$(PY) -m samlib bench

clean:
	rm -rf $(VENV) outputs/*/ .pytest_cache site
