# Entry points for people and CI. The scripts in scripts/ do the work; see README.md.
VENV ?= .venv
export VENV

.PHONY: test run check bench docs venv

## test: install what the tests need (Debian packages, venv), run the gates and pytest
test:
	./scripts/test

## run: run kube-ballast on its embedded simulator (Ctrl-C stops it); clients use
## the kubeconfig written to build/simulator.kubeconfig
run: venv
	mkdir -p build
	$(VENV)/bin/kube-ballast simulate --kubeconfig build/simulator.kubeconfig

## check: ruff, ruff format --check, mypy, import-linter
check: venv
	./scripts/check

## bench: run the benchmarks (numbers, not pass/fail)
bench: venv
	$(VENV)/bin/python bench/run.py

## docs: regenerate docs/config-reference.md, docs/config.example.yaml, docs/metrics.md,
## docs/alerts.md, deploy/prometheusrule/, and the dashboards (dashboards/*.json,
## dashboards/provisioning/, deploy/dashboards/, docs/dashboards.md)
docs: venv
	$(VENV)/bin/kube-ballast config reference > docs/config-reference.md
	$(VENV)/bin/kube-ballast config example > docs/config.example.yaml
	$(VENV)/bin/kube-ballast exporter --list-metrics markdown > docs/metrics.md
	$(VENV)/bin/python alerts/render.py
	$(VENV)/bin/python dashboards/generate.py

venv:
	./scripts/venv
