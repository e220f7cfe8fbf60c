# Two commands for a fresh machine (see README):  make demo   |   make test
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PYBIN := $(VENV)/bin/python
STAMP := $(VENV)/.gpua_mmseg_installed
PYTEST_ARGS ?=

.PHONY: venv test demo demo-align bench-align bench clean-venv

# Pinned, known-good stack (requirements/stack.txt); the plugin itself installs editable with
# --no-deps so it never replaces an existing torch / mmcv.
$(STAMP): requirements/stack.txt requirements/dev.txt setup.py
	$(PY) -m venv $(VENV)
	$(PYBIN) -m pip install -q -r requirements/stack.txt -r requirements/dev.txt
	$(PYBIN) -m pip install -q -e . --no-deps
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(PYBIN) -m pytest $(PYTEST_ARGS)

# The main job: segment scikit-image's sample photos with GPUA + SC-CLIP, fitting the GPUA map
# on them first.  Real weights by name (internet), local files (GPUA_MMSEG_CACHE, see
# docs/USAGE.md), or WEIGHTS=random for an offline pipeline check with meaningless pictures.
# WEIGHTS=toy segments generated toy-world scenes with the shipped toy CLIP + VFM (offline).
# Options: IMAGES=path CLASSES="cat; sofa; background" CONFIG=scclip OUT=dir DEMO_ARGS=...
CONFIG ?= gpua_scclip
OUT ?= outputs/demo
demo: venv
ifeq ($(WEIGHTS),toy)
	$(PYBIN) tools/toyworld_demo.py --out $(OUT) --method $(if $(findstring gpua,$(CONFIG)),gpua_sclip,sclip) $(DEMO_ARGS)
else
	$(PYBIN) tools/demo.py $(if $(IMAGES),$(IMAGES),--samples) $(if $(CLASSES),--classes "$(CLASSES)") \
		--config $(CONFIG) --out $(OUT) $(if $(findstring gpua,$(CONFIG)),--fit) \
		$(if $(WEIGHTS),--weights $(WEIGHTS)) $(DEMO_ARGS)
endif

demo-align: venv
	$(PYBIN) tools/demo_alignment.py --out outputs/demo_alignment

bench-align: venv
	$(PYBIN) tools/benchmark_alignment.py

bench: venv
	$(PYBIN) tools/benchmark.py

clean-venv:
	rm -rf $(VENV)
