# The folder operator/ would shadow the standard library module "operator" if the current
# directory were on sys.path: PYTHONSAFEPATH keeps it off for every python started here.
export PYTHONSAFEPATH := 1

.PHONY: install install-dev demo test lint images images-test

install:
	scripts/install.sh

install-dev:
	scripts/install.sh --dev

demo: install
	.venv/bin/forgetmi demo --workdir .demo --seed 0

test: install-dev
	.venv/bin/python -m ruff check .
	.venv/bin/lint-imports
	PATH="$(CURDIR)/.tools/bin:$$PATH" .venv/bin/python -m pytest -q

lint:
	.venv/bin/python -m ruff check .
	.venv/bin/lint-imports

# The operator and trainer images, built with buildah (no Docker daemon; root; see README.md).
images:
	scripts/images.sh

images-test: install-dev
	scripts/images-test.sh
