# sales-cdc: make help
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Two workers (pytest-xdist), each taking whole test files: much of a test's time is a process, a JVM or a
# moto server starting, so two side by side take ~0.75 of the time on two cores. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile

.DEFAULT_GOAL := help
.PHONY: help install demo demo-fixtures dq-docs test test-fast lint format fixtures docs-assets bench wheel deploy teardown clean
STACK ?= sales-cdc
CHECKOV := .venv-checkov/bin/checkov

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): setup.py
	@command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless)
	@# headless Chromium renders the Data Docs site in a test (which fails without it)
	@command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || \
	  ( [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium-headless-shell \
	    >/dev/null ) || echo "note: chromium not installed (needs root and apt); the Data Docs render test will fail"
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[local,dev]" 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import sales_cdc, pyspark, psycopg, chispa, great_expectations" # fail here if the install did not work
	@touch $(STAMP)

install: $(STAMP) ## create .venv (if missing) and install the package with its local and dev extras

demo: install ## end to end on moto: generator -> DynamoDB -> pipe -> Kinesis -> Spark -> PostgreSQL, verified
	$(VENV)/bin/sales-cdc demo

demo-fixtures: install ## offline: the checked-in fixtures -> file stream -> Spark -> PostgreSQL, verified
	$(VENV)/bin/sales-cdc demo-fixtures

dq-docs: install ## print the data-quality Data Docs site of the last demo (open it with OPEN=1)
	$(VENV)/bin/sales-cdc dq-docs $(if $(OPEN),--open)

test: install ## run the whole test suite (real Spark, real PostgreSQL), slow end-to-end tests included
	$(PYTEST) $(PYTEST_ARGS)

test-fast: install ## the suite without tests marked slow
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

$(CHECKOV):  # own venv: checkov pins packaging<24, which pytest 9 cannot use
	@test -x $(CHECKOV) || (python3 -m venv .venv-checkov && .venv-checkov/bin/pip install -q "checkov==3.3.30" 2>&1 \
	  | grep -v "^WARNING: Location" || true)

lint: install $(CHECKOV) ## ruff, cfn-lint and checkov (CloudFormation)
	$(VENV)/bin/ruff check libs jobs tests bench scripts
	$(VENV)/bin/cfn-lint infra/cloudformation/*.yaml
	BC_SKIP_MAPPING=TRUE $(CHECKOV) --quiet --compact --skip-download --framework cloudformation -d infra/cloudformation

format: install ## ruff format + autofix
	$(VENV)/bin/ruff check --fix libs jobs tests

fixtures: install ## regenerate tests/fixtures from tests/fixtures/build_cdc_fixtures.py
	$(PY) tests/fixtures/build_cdc_fixtures.py

docs-assets: install ## fetch the Data Docs pages' scripts, styles and fonts from npm (pinned, into the package)
	$(PY) scripts/vendor_docs_assets.py

bench: install ## benchmarks with baselines in one run -> bench/results/ (about 20 minutes)
	$(PY) -m bench.run $(BENCH_ARGS)

wheel: install ## build dist/sales_cdc-*.whl (what the Glue job installs)
	SALES_CDC_WHEEL=job $(PY) -m pip wheel --no-deps -q -w dist .

deploy: install ## deploy to AWS: make deploy SUBNETS=subnet-a,subnet-b,subnet-c SECURITY_GROUPS=sg-1 [ALERT_EMAIL=..] [STACK=..]
	$(VENV)/bin/sales-cdc deploy --stack $(STACK) --subnets $(SUBNETS) --security-groups $(SECURITY_GROUPS) \
	  --alert-email "$(ALERT_EMAIL)"

teardown: install ## delete the stack (data stores are retained): make teardown [STACK=..]
	$(VENV)/bin/sales-cdc teardown --stack $(STACK)

clean: ## remove the demo state and caches (keeps .venv)
	rm -rf .demo .pytest_cache .ruff_cache spark-warehouse
