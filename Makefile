# `make run`: set up, train a model if there is none (and its int8 graph), make the int8 landmark model, evaluate
# the model, then serve it on port 5000.
# `make test`: set up (including Debian's chromium for the web page test), run every test (CI).
# `make test-fast`: the quick tier (pytest -m "not slow"), a few minutes at most, every module covered.
# `make bench`: the load benchmarks, /predict with four photos (about 9 minutes), then /stream (about 2.5 minutes).
VENV := .venv
BIN := $(VENV)/bin
MODEL := runs/default/model.safetensors
INT8 := runs/default/model.int8.onnx
SAMPLE := ../shared/data/samples/sample.jpg
CHROMIUM := /usr/bin/chromium

.PHONY: install hand-int8 browser run test test-fast bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/signs fetch-hand-models
	touch $@

install: $(BIN)/.installed

$(MODEL): | $(BIN)/.installed
	$(BIN)/signs train --out $(dir $(MODEL))

# The int8 graph the server's default engine (auto) runs when it sits beside the model.
$(INT8): $(MODEL)
	$(BIN)/signs export --model $(MODEL) --format onnx-int8

# The hand finder's landmark model in int8, calibrated on SIGNS' training photos (hands/quantize.py; a no-op once
# made); without those photos (exit 3) the hand models stay fp32 and everything else goes on; any other failure stops.
hand-int8: $(BIN)/.installed
	$(BIN)/signs quantize-hand-models || test $$? -eq 3

# The web page test drives Debian's chromium through Playwright (never a downloaded browser).
browser:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the web page test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
	  echo "could not install chromium (not root? no apt?): the web page test will be skipped"; }

run: $(BIN)/.installed $(MODEL) $(INT8) hand-int8
	$(BIN)/signs evaluate --model $(MODEL)
	$(BIN)/signs predict --model $(MODEL) $(SAMPLE)
	$(BIN)/signs serve --model $(MODEL) --port 5000

# Two workers, a test file each at a time: the tests wait on the processes they start (servers, training, pip)
# for much of their time, which a second worker fills (docs/development.md, "Tests").
test: $(BIN)/.installed browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

bench: $(BIN)/.installed $(MODEL) $(INT8) hand-int8
	$(BIN)/python benchmarks/serve_load.py --model $(MODEL)
	$(BIN)/python benchmarks/stream_load.py --model $(MODEL)

clean:
	rm -rf $(VENV) runs
