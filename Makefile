# nbidle — make demo | make test | make bench
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo demo-check test test-deps unit lint bench fuzz rules fmt

## demo: the whole loop on this machine; Ctrl-C stops everything
demo:
	bash scripts/demo.sh

## demo-check: the demo, non-interactive: waits for the stop, starts again, exits
demo-check:
	NBIDLE_DEMO_AUTO=1 bash scripts/demo.sh

## test-deps: install Prometheus, Alertmanager, Jupyter (with nbidle's
## JupyterLab extension, built from jupyterlab/), Chromium and playwright-core
## when missing, and build kube-apiserver, etcd and kubectl from the Go module
## proxy, and JupyterHub with configurable-http-proxy (all cached)
test-deps:
	bash scripts/test-deps.sh >/dev/null
	bash scripts/browser-deps.sh >/dev/null
	bash scripts/hub-deps.sh >/dev/null
	bash scripts/jupyterlab-ext.sh >/dev/null
	bash scripts/envtest/build.sh >/dev/null

## test: unit tests, promtool/amtool checks, integration and end-to-end tests
test: test-deps
	$(CARGO) test --lib --bins --tests -- --test-threads=2

## fuzz: the webhook parser and decision against 1,000,000 generated and
## mutated payloads, release build (PROPTEST_CASES=N for another count)
fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-1000000} $(CARGO) test --release --test fuzz_webhook -- --nocapture

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## rules: regenerate the checked-in rules, Alertmanager config and deploy/monitoring/*
## from their configs (NBIDLE=<path of an nbidle binary> to use one already built)
NBIDLE ?= $(CARGO) run --quiet --
rules:
	$(NBIDLE) rules --out rules
	$(NBIDLE) rules --format prometheus-rule --out rules
	$(NBIDLE) rules --config rules/tests/all-signals.nbidle.yaml > rules/tests/all-signals.rules.yml
	$(NBIDLE) manifests alertmanager --config demo/nbidle.yaml > alertmanager/alertmanager.yml
	for backend in kubeflow statefulset; do \
	  cfg=deploy/overlays/$$backend/nbidle.yaml; out=deploy/monitoring/$$backend; \
	  $(NBIDLE) rules --format prometheus-rule --config $$cfg > $$out/prometheusrule.yaml && \
	  $(NBIDLE) manifests pod-monitor --config $$cfg > $$out/podmonitor.yaml && \
	  $(NBIDLE) manifests service-monitor --config $$cfg > $$out/servicemonitor.yaml && \
	  $(NBIDLE) manifests alertmanager-config --config $$cfg > $$out/alertmanagerconfig.yaml || exit 1; \
	done

## bench: webhook, exporter and Kubernetes backend speed and memory, memory under hostile peers,
## the local backend's process scans, the stopped notebooks' pages' memory, the JupyterLab pushes, the JupyterHub backend beside jupyterhub-idle-culler, the rules' cost in Prometheus and the stop lag through Prometheus and Alertmanager (see docs/benchmarks.md)
bench:
	bash scripts/test-deps.sh >/dev/null
	$(CARGO) build --release --bin nbidle --benches
	$(CARGO) bench --bench webhook
	$(CARGO) bench --bench exporter
	$(CARGO) bench --bench hostile
	$(CARGO) bench --bench rule_eval
	$(CARGO) bench --bench stop_lag
	$(CARGO) bench --bench procscan
	$(CARGO) bench --bench page
	$(CARGO) bench --bench stopped_pages
	$(CARGO) bench --bench notify
	bash scripts/hub-deps.sh >/dev/null
	$(CARGO) bench --bench jupyterhub
	bash scripts/envtest/build.sh >/dev/null
	$(CARGO) bench --bench kube
