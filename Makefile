# Entry points for people and CI. The scripts in scripts/ do the work; see README.md.
VENV ?= .venv
export VENV

.PHONY: test run check bench docs venv

## test: install what the tests need (Debian packages, venv), run the gates and pytest
test:
	./scripts/test

## run: the demo (docs/demo.md): a simulated cluster, etcd, the exporter, the receiver,
## Prometheus and Alertmanager on loopback (Ctrl-C stops them all); installs the Debian
## packages it needs first when run as root. Incidents: kube-ballast demo scenario NAME
run:
	./scripts/debian-packages etcd-server etcd-client prometheus prometheus-alertmanager
	./scripts/venv
	$(VENV)/bin/kube-ballast demo

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
