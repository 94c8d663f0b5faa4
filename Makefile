# Every target bootstraps .venv on first use, so a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# NVIDIA's tritonclient, for the interop tests: every release pins a protobuf or
	# geventhttpclient that conflicts with ours (protobuf 7, locust's geventhttpclient), though
	# 2.73.0 runs fine with them; so it comes without its pins, and its own needs by hand.
	$(BIN)/pip install --quiet --no-deps 'tritonclient==2.73.0'
	$(BIN)/pip install --quiet ml-dtypes python-rapidjson urllib3
	touch $(STAMP)

# A verdict is a result, not a failure: exit codes 0 GO, 1 NO-GO and 3 INCONCLUSIVE all
# count as a demo that ran; 2 (bad input) and 4 (the run failed) fail the target.
demo: $(STAMP)
	$(BIN)/shadowline demo; code=$$?; [ $$code -le 1 ] || [ $$code -eq 3 ]

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/analyze_bench.py
	$(BIN)/python benchmarks/grpc_bench.py

clean:
	rm -rf $(VENV) runs benchmarks/out
