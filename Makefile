# Two commands for a fresh machine (see README):  make demo   |   make test
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PYBIN := $(VENV)/bin/python
STAMP := $(VENV)/.gpua_mmseg_installed
PYTEST_ARGS ?=

.PHONY: venv test demo demo-align bench-align bench clean-venv device-wheels

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

# The wheels tools/device/gpu_check.sh installs on the GPU box (its image lacks OpenMMLab and
# open_clip; Python 3.12, x86-64 there).  All pure Python but wcwidth (abi3, x86-64).
DEVICE_WHEELS = mmengine==0.10.7 mmsegmentation==1.2.2 open_clip_torch==3.3.0 timm==1.0.31 \
	ftfy wcwidth addict yapf termcolor prettytable platformdirs
device-wheels: venv
	rm -rf .whl && mkdir -p .whl
	$(PYBIN) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl $(DEVICE_WHEELS)
	$(PYBIN) -m pip wheel -q --no-deps mmcv-lite==2.1.0 -w .whl

demo-align: venv
	$(PYBIN) tools/demo_alignment.py --out outputs/demo_alignment

bench-align: venv
	$(PYBIN) tools/benchmark_alignment.py

bench: venv
	$(PYBIN) tools/benchmark.py

clean-venv:
	rm -rf $(VENV)
