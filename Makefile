# `make book` and `make test` are the two commands a new reader needs; each creates the
# virtual environment first if it is missing or out of date.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROFILE ?= default
export EXPLODING_GRADIENTS_CACHE ?= $(CURDIR)/.cache/results
# One torch thread per process: the small matrices here gain little from a second
# thread, and two notebooks then run side by side on the two cores.
export OMP_NUM_THREADS ?= 1
JOBS ?= 2

NOTEBOOKS := $(wildcard notebooks/*.ipynb)
EXECUTED  := $(patsubst notebooks/%.ipynb,book/generated/%.ipynb,$(NOTEBOOKS))
# One make rule per page naming the package modules it uses (exploding_gradients.build.rules):
# a change elsewhere in the package does not re-execute it.
DEPFILES  := $(EXECUTED:.ipynb=.d)
PACKAGE   := $(shell find src -name '*.py')
BOOK_SRC  := _config.yml _toc.yml $(wildcard book/*.md book/*.bib book/_ext/*.py)
# The profile is part of every executed page's identity: switching it re-executes.
PROFILE_STAMP := book/generated/.profile-$(PROFILE)

.PHONY: book pdf test lint venv clean benchmark linkcheck

book: $(STAMP)
	$(MAKE) -j$(JOBS) $(EXECUTED)
	$(MAKE) _build/html/index.html

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test,lightning]"
	touch $@

$(PROFILE_STAMP):
	mkdir -p book/generated
	rm -f book/generated/.profile-*
	touch $@

# BACKEND=local|dask (and SCHEDULER=tcp://host:port) run each chapter's experiments there.
book/generated/%.ipynb: notebooks/%.ipynb $(STAMP) $(PROFILE_STAMP)
	$(PY) -m exploding_gradients.build.bookbuild $< $@ --profile $(PROFILE) \
		$(if $(BACKEND),--backend $(BACKEND)) $(if $(SCHEDULER),--scheduler $(SCHEDULER))

# The scaling page times the machine: it runs after every other page, alone.
book/generated/scaling.ipynb: | $(filter-out book/generated/scaling.ipynb,$(EXECUTED))

# Any package change may add or drop an import, so every rule is regenerated; written to
# a temporary file and renamed, so a failure leaves the previous rule or none.
book/generated/%.d: notebooks/%.ipynb $(PACKAGE) $(STAMP)
	@mkdir -p $(@D)
	$(PY) -m exploding_gradients.build.rules $< > $@.tmp && mv $@.tmp $@ || { rm -f $@.tmp; exit 1; }

# Read (and so first brought up to date) only by the makes that build pages: the `book`
# recipe's sub-makes, which regenerate them in parallel; `make clean` does not need them.
ifneq ($(filter book/generated/% _build/%,$(MAKECMDGOALS)),)
-include $(DEPFILES)
endif

# jupyter-book with -W; after a failed or interrupted build the next one starts from
# scratch, so it stays strict (exploding_gradients.build.site), and make always reruns it.
ifneq ($(wildcard _build/.unverified),)
.PHONY: _build/html/index.html
endif
_build/html/index.html: $(EXECUTED) $(BOOK_SRC) $(STAMP)
	$(PY) -m exploding_gradients.build.site .
	touch $@

# The whole book as one PDF, printed by Chromium from the single-page build
# (exploding_gradients.build.pdf): _build/html/exploding-gradients.pdf, linked from the intro.
pdf: book
	$(if $(CHROMIUM),CHROMIUM=$(CHROMIUM)) $(PY) -m exploding_gradients.build.pdf .

test: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

# Optional, needs network: checks the external links of the built book with Sphinx's
# linkcheck builder (report in _build/linkcheck/output.txt). Not part of `make test`, which
# runs offline; internal links are checked there by tests/test_site.py.
linkcheck: $(STAMP)
	$(MAKE) -j$(JOBS) $(EXECUTED)
	$(VENV)/bin/jupyter-book build . --builder linkcheck

benchmark: $(STAMP)
	$(PY) benchmarks/run.py --profile $(PROFILE)

clean:
	rm -rf _build book/generated .cache
