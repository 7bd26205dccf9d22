# Two commands for a fresh machine (Python ≥ 3.11, offline is fine after install):
#   make demo   set up, index the bundled sample folder with the built-in model, run example queries
#   make test   set up, run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STORE := indexes/demo
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test setup bench clean-demo browser postgres

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch and torchvision must be a matched pair (open_clip needs torchvision)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_STORE)
	$(BIN)/mmsearch index samples/shapes samples/sounds samples/videos --store $(DEMO_STORE) --model builtin:shapes --model builtin:tones
	$(BIN)/mmsearch stats --store $(DEMO_STORE)
	@echo; echo '$$ mmsearch query "a red circle" --type image -k 5'
	$(BIN)/mmsearch query "a red circle" --type image --store $(DEMO_STORE) -k 5
	@echo; echo '$$ mmsearch query "a small blue star" --type image -k 5'
	$(BIN)/mmsearch query "a small blue star" --type image --store $(DEMO_STORE) -k 5
	@echo; echo '$$ mmsearch query --image samples/shapes/images/$$(ls samples/shapes/images | head -1) -k 5'
	$(BIN)/mmsearch query --image samples/shapes/images/$$(ls samples/shapes/images | head -1) --store $(DEMO_STORE) -k 5
	@echo; echo '$$ mmsearch query "a circle - red" --type image -k 3      # combined: circles, but not red ones'
	$(BIN)/mmsearch query "a circle - red" --type image --store $(DEMO_STORE) -k 3
	@echo; echo '$$ mmsearch query "a star" --where "width>=64" --path "*yellow*" -k 3   # filtered before the search'
	$(BIN)/mmsearch query "a star" --where "width>=64" --path "*yellow*" --store $(DEMO_STORE) -k 3
	@echo; echo '$$ mmsearch dups'
	$(BIN)/mmsearch dups --store $(DEMO_STORE)
	@echo; echo '$$ mmsearch query "a yellow star" --type text -k 3'
	$(BIN)/mmsearch query "a yellow star" --type text --store $(DEMO_STORE) -k 3
	@echo; echo '$$ mmsearch query "a rising whistle" --type audio -k 3'
	$(BIN)/mmsearch query "a rising whistle" --type audio --store $(DEMO_STORE) -k 3
	@echo; echo '$$ mmsearch query --audio samples/sounds/noise-white_00.wav -k 3'
	$(BIN)/mmsearch query --audio samples/sounds/noise-white_00.wav --store $(DEMO_STORE) -k 3
	@echo; echo '$$ mmsearch query "white noise" -k 4 --explain      # photos and sounds in one list, by calibrated score'
	$(BIN)/mmsearch query "white noise" --store $(DEMO_STORE) -k 4 --explain
	@echo; echo '$$ mmsearch query "a blue square" --type video -k 3      # the video, and the seconds it is on screen'
	$(BIN)/mmsearch query "a blue square" --type video --store $(DEMO_STORE) -k 3
	@echo; echo '$$ mmsearch query "a rising whistle" --type video --moments 2 -k 2   # heard in a soundtrack'
	$(BIN)/mmsearch query "a rising whistle" --type video --moments 2 --store $(DEMO_STORE) -k 2
	@echo; echo 'Search page: $(BIN)/mmsearch serve --store $(DEMO_STORE)   then open http://127.0.0.1:8765/'

test: $(STAMP) browser postgres
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# the browser test (tests/test_browser.py) needs chromium + chromedriver: on CI, install them when this
# runs as root with apt; anywhere else, or when that fails, the test is skipped and says why
browser:
	-@if [ "$$CI" = "true" ] && ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
	      || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "not root or no apt-get: chromium not installed, the browser test will be skipped"; fi; \
	fi

# the PostgreSQL tests (tests/store/test_postgres.py) start a throwaway server with initdb/pg_ctl: on CI,
# install Debian's postgresql when this runs as root with apt; elsewhere, or when that fails, they skip and say why
postgres:
	-@if [ "$$CI" = "true" ] && ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq postgresql) \
	      || echo "could not install postgresql: the PostgreSQL tests will be skipped"; \
	  else echo "not root or no apt-get: postgresql not installed, the PostgreSQL tests will be skipped"; fi; \
	fi

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_query.py
	$(BIN)/python benchmarks/bench_eval_shapes.py
	$(BIN)/python benchmarks/bench_audio.py
