# labelstack: Label Studio + PostgreSQL + local files, deployed with Ansible and Docker Compose.
# `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

INVENTORY ?= inventory/local
TEST_INVENTORY ?= inventory/test-local
VENV ?= .venv
REPORTS ?= reports
CONFIRM_DESTROY_DATA ?= no
BACKUP ?=
AT ?=
FROM ?=
PROJECT ?=
EXPORT_DIR ?= exports
PROJECTS_FILE ?= exports/projects.yml
BENCH_ARGS ?=
ANSIBLE_ARGS ?=

BIN := $(VENV)/bin
PLAYBOOK := $(BIN)/ansible-playbook
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv browser deploy bundle test-hosts test-ha test-upgrade test-recovery test-monitoring check down destroy backup restore drill backup-status export projects projects-export bench bench-backup lint unit smoke test lock clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "  Variables: INVENTORY=$(INVENTORY)  ANSIBLE_ARGS='$(ANSIBLE_ARGS)'  CONFIRM_DESTROY_DATA=$(CONFIRM_DESTROY_DATA)  BACKUP=$(BACKUP)  AT=$(AT)  FROM=$(FROM)"

$(BIN)/ansible-playbook: requirements.lock scripts/bootstrap-venv.sh
	@VENV=$(VENV) scripts/bootstrap-venv.sh
	@touch $@

venv: $(BIN)/ansible-playbook ## Create the tooling virtualenv (.venv) from requirements.lock

browser: ## Install Debian's chromium and chromium-driver for the browser tier (tests/ui) when missing
	@scripts/install-browser.sh

deploy: venv ## Deploy (or update) Label Studio on INVENTORY (default: this machine)
	$(PLAYBOOK) -i $(INVENTORY) ansible/site.yml $(ANSIBLE_ARGS)

bundle: venv ## Build the images here and save them for air-gapped hosts (labelstack_image_bundle of INVENTORY)
	$(PLAYBOOK) -i $(INVENTORY) ansible/bundle.yml $(ANSIBLE_ARGS)

check: venv ## Dry-run the deploy on INVENTORY and show what would change
	$(PLAYBOOK) -i $(INVENTORY) ansible/site.yml --check --diff $(ANSIBLE_ARGS)

down: venv ## Stop and remove the containers on INVENTORY, keeping all data
	$(PLAYBOOK) -i $(INVENTORY) ansible/down.yml $(ANSIBLE_ARGS)

destroy: venv ## Remove the containers; also the data with CONFIRM_DESTROY_DATA=yes
	$(PLAYBOOK) -i $(INVENTORY) ansible/destroy.yml \
	  -e '{"labelstack_destroy_data": $(if $(filter yes,$(CONFIRM_DESTROY_DATA)),true,false)}' $(ANSIBLE_ARGS)

backup: venv ## Back up the database, data directories and secrets on INVENTORY (stack stays up)
	$(PLAYBOOK) -i $(INVENTORY) ansible/backup.yml $(ANSIBLE_ARGS)

restore: venv ## Restore BACKUP=<name> (from the off-site copy with FROM=offsite), or the database to AT="<UTC time>" (PITR), on INVENTORY
	@test -n "$(BACKUP)$(AT)" || { echo "FAIL: name a backup or a time: make restore BACKUP=<YYYYMMDDTHHMMSSZ> or AT=\"YYYY-MM-DD HH:MM:SS\"" >&2; exit 2; }
	@case "$(FROM)" in ""|offsite) ;; *) echo "FAIL: FROM must be empty or offsite, got '$(FROM)'" >&2; exit 2;; esac
	$(PLAYBOOK) -i $(INVENTORY) ansible/restore.yml \
	  -e '{"labelstack_restore_backup": "$(BACKUP)", "labelstack_restore_time": "$(AT)", "labelstack_restore_from": "$(FROM)"}' $(ANSIBLE_ARGS)

drill: venv ## Restore the newest backup of INVENTORY into a throwaway stack, test it, remove it, record the result
	$(PLAYBOOK) -i $(INVENTORY) ansible/drill.yml $(ANSIBLE_ARGS)

backup-status: venv ## Newest backups, WAL archive lag, last off-site push and drill on INVENTORY; fails naming what is too old
	ANSIBLE_DISPLAY_SKIPPED_HOSTS=false $(PLAYBOOK) -i $(INVENTORY) ansible/backup-status.yml $(ANSIBLE_ARGS)

export: venv ## Export project PROJECT=<id> on INVENTORY as JSON into EXPORT_DIR, outside any HTTP timeout
	@test -n "$(PROJECT)" || { echo "FAIL: name the project: make export PROJECT=<id>" >&2; exit 2; }
	$(PLAYBOOK) -i $(INVENTORY) ansible/export.yml \
	  -e '{"labelstack_export_project": $(PROJECT), "labelstack_export_dest": "$(abspath $(EXPORT_DIR))"}' $(ANSIBLE_ARGS)

projects: venv ## Apply labelstack_projects of INVENTORY to its running stack only (ANSIBLE_ARGS='--check --diff' previews)
	$(PLAYBOOK) -i $(INVENTORY) ansible/projects.yml $(ANSIBLE_ARGS)

projects-export: venv ## Write the projects of INVENTORY's stack as labelstack_projects YAML into PROJECTS_FILE
	$(PLAYBOOK) -i $(INVENTORY) ansible/projects-export.yml \
	  -e '{"labelstack_projects_export_file": "$(abspath $(PROJECTS_FILE))"}' $(ANSIBLE_ARGS)

bench: venv ## Benchmark the stack of INVENTORY (this machine) against the quick start; results in reports/bench (BENCH_ARGS=--scale: 20k and 200k tasks, filters, cost curve)
	$(BIN)/python scripts/bench.py --inventory $(INVENTORY) --output-dir $(REPORTS)/bench $(BENCH_ARGS)

bench-backup: venv ## Time backup and restore of a 20k-task project on TEST_INVENTORY (replaces its data; BENCH_ARGS=--pitr: also restore to a time)
	$(BIN)/python scripts/bench-backup.py --inventory $(TEST_INVENTORY) $(BENCH_ARGS)

lint: venv ## ansible-lint (production profile), yamllint, ruff, argument-spec drift check, promtool on the alert rules
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint --profile production
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/check-argument-specs.py
	scripts/check-alert-rules.sh

unit: venv ## Unit tests (no stack needed)
	$(BIN)/pytest tests/unit --junitxml=$(REPORTS)/unit.xml

smoke: venv browser ## Verify the deployment on INVENTORY (host checks, SDK round trips, the UI in Chromium, attacks)
	$(BIN)/pytest tests/infra tests/smoke tests/ml tests/ui tests/security --inventory $(INVENTORY) --junitxml=$(REPORTS)/smoke.xml

test: lint unit browser ## Lint, unit tests, the whole suite against a test stack on this machine, then on two SSH test hosts
	$(BIN)/pytest tests/integration tests/infra tests/smoke tests/ml tests/ui tests/security --inventory $(TEST_INVENTORY) --deploy \
	  --ignore=tests/integration/test_upgrade.py -m 'not recovery' --junitxml=$(REPORTS)/test.xml
	$(MAKE) --no-print-directory test-hosts

test-recovery: venv ## The slow restore paths (killed pg_restore, encrypted backup, off-site copies, PITR on inventory/test-pitr, the drill on inventory/test-drill); ~40 min, so not in `test`
	$(BIN)/pytest tests/integration/test_backup_restore.py --inventory $(TEST_INVENTORY) --deploy -m recovery \
	  --junitxml=$(REPORTS)/recovery.xml
	$(BIN)/pytest tests/integration/test_offsite.py --inventory $(TEST_INVENTORY) -m recovery \
	  --junitxml=$(REPORTS)/recovery-offsite.xml
	trap '$(PLAYBOOK) -i inventory/test-pitr ansible/destroy.yml -e "{\"labelstack_destroy_data\": true}"' EXIT; \
	$(BIN)/pytest tests/integration/test_pitr.py --inventory inventory/test-pitr --deploy -m recovery \
	  --junitxml=$(REPORTS)/recovery-pitr.xml
	trap '$(PLAYBOOK) -i inventory/test-drill ansible/destroy.yml -e "{\"labelstack_destroy_data\": true}"' EXIT; \
	$(BIN)/pytest tests/integration/test_drill.py --inventory inventory/test-drill --deploy -m recovery \
	  --junitxml=$(REPORTS)/recovery-drill.xml

test-upgrade: venv ## Upgrade a third stack (inventory/test-upgrade) from Label Studio 1.22.0; ~10 min, so not in `test`
	$(BIN)/pytest tests/integration/test_upgrade.py --junitxml=$(REPORTS)/upgrade.xml

test-monitoring: venv ## Deploy a monitored stack (inventory/test-monitoring), make alerts fire and resolve, remove it; ~15 min
	trap '$(PLAYBOOK) -i inventory/test-monitoring ansible/destroy.yml -e "{\"labelstack_destroy_data\": true}"' EXIT; \
	$(BIN)/pytest tests/monitoring --inventory inventory/test-monitoring --deploy --junitxml=$(REPORTS)/monitoring.xml

test-hosts: venv ## Provision two fresh SSH test hosts (db + offline app from a bundle), test them, recover a lost app host from the off-site copy, smoke them, remove them
	trap 'scripts/testhosts.sh down' EXIT; \
	$(BIN)/pytest tests/hosts --keep-testhosts --junitxml=$(REPORTS)/hosts.xml; \
	$(BIN)/pytest tests/infra tests/smoke tests/ml/test_ml_backend.py tests/ml/test_deploy_wiring.py \
	  --inventory inventory/test-hosts --junitxml=$(REPORTS)/hosts-smoke.xml

test-ha: venv ## Provision six fresh SSH test hosts (3 Patroni/etcd db hosts, 2 app hosts, their balancer), lose an app host and the primary twice each, remove them; ~40 min, so not in `test`
	trap 'scripts/testhosts.sh --set ha down' EXIT; \
	$(BIN)/pytest tests/ha --keep-ha-testhosts --junitxml=$(REPORTS)/ha.xml

lock: ## Regenerate requirements.lock from requirements.in
	rm -rf .venv-lock && python3 -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet -r requirements.in
	{ echo "# Generated from requirements.in by 'make lock'. Do not edit by hand."; \
	  .venv-lock/bin/pip freeze; } > requirements.lock
	rm -rf .venv-lock

clean: ## Remove the virtualenv and reports
	rm -rf $(VENV) $(REPORTS) .pytest_cache .ruff_cache
