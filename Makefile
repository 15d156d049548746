# `make run`: set up, train a model if there is none, then run the main job.  `make test`: set up, run the tests.
VENV := .venv
BIN := $(VENV)/bin
MODEL := runs/default/model.safetensors
SAMPLE := ../shared/data/samples/sample.jpg

.PHONY: install run test bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(BIN)/.installed

$(MODEL): | $(BIN)/.installed
	$(BIN)/signs train --out $(dir $(MODEL))

run: $(BIN)/.installed $(MODEL)
	$(BIN)/signs evaluate --model $(MODEL)
	$(BIN)/signs predict --model $(MODEL) $(SAMPLE)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
