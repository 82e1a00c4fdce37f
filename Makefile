# MyCert — the two commands of the README:
#   make run    set everything up and run the service with demo data
#   make test   set everything up and run the whole test suite (ruff, mypy, migrations, pytest ×2)
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PG_URL ?= postgres://postgres@127.0.0.1:5432/mycert
REDIS_URL ?= redis://127.0.0.1:6379/15
AXE := tests/browser/node_modules/axe-core/axe.min.js
# Keep Python's byte-code caches (__pycache__, ignored by git) even where the environment
# turns them off: otherwise every Python start (a test process, a Celery worker, each
# `manage.py check` a test runs) compiles Django and the project anew, ~2 s a time.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: mail totp
# The demo's mailbox, typed in another terminal while `make run` runs: lists the e-mails
# with their text (the password e-mail's password) and saves the keystores to
# var/keystores/, the newest also as var/keystores/latest.p12. DJANGO_DEBUG as `make run`
# sets it: without it, settings refuse to start with no DJANGO_SECRET_KEY.
mail:
	DJANGO_DEBUG=true $(BIN)/python manage.py demo_mail --body \
	  --save-keystore "$${MYCERT_VAR_DIR:-var}/keystores"

# The demo helpdesk's current TOTP code for /admin/ (make run enrols helpdesk and admin).
totp:
	@DJANGO_DEBUG=true $(BIN)/python manage.py demo_totp $(or $(AGENT),helpdesk)

.PHONY: help setup system-deps browser-deps browser-system-deps services lint test test-sqlite test-postgres run benchmarks messages screenshots

help:
	@echo "make run    — set up and run MyCert with demo data (http://127.0.0.1:8000)"
	@echo "make test   — set up and run the whole test suite"
	@echo "make check  — the fast inner loop: ruff, mypy and the unit tests (SQLite)"
	@echo "make mail   — while make run runs: the demo's e-mails, keystores to var/keystores/"
	@echo "make totp   — while make run runs: the demo helpdesk's TOTP code for /admin/"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP) system-deps

# What the browser tests need on top (Chromium from Debian, axe-core from npm).
browser-deps: browser-system-deps $(AXE)

# axe-core (npm) for the browser tests' accessibility checks, pinned by package-lock.json.
$(AXE): tests/browser/package.json tests/browser/package-lock.json | browser-system-deps
	@if command -v npm >/dev/null; then \
	  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm is missing: the browser tests will be skipped."; fi

# The browser tests again, writing the README's screenshots to docs/screenshots/.
screenshots: setup browser-deps
	MYCERT_SCREENSHOT_DIR=docs/screenshots $(BIN)/python -m pytest tests/browser -q -p no:cacheprovider

# Debian tools the service and its tests call: gpg, openssl, keytool (Java), msgfmt,
# SoftHSM2 (the PKCS#11 token of the key-custody tests).
system-deps:
	@missing=""; \
	command -v gpg >/dev/null || missing="$$missing gnupg"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v keytool >/dev/null || missing="$$missing default-jre-headless"; \
	command -v msgfmt >/dev/null || missing="$$missing gettext"; \
	command -v softhsm2-util >/dev/null || missing="$$missing softhsm2"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# Chromium and npm for the browser tests (tests/browser); the tests skip, saying why,
# only if Chromium cannot be installed.
browser-system-deps:
	@missing=""; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) || \
	    echo "Could not install$$missing: the browser tests will be skipped."; \
	fi

# The mutual-TLS tests (tests/integration/test_selfcheck_nginx.py, test_relying_parties.py)
# run Debian's nginx and Apache httpd as their own processes, curl and Java clients
# (javac: single-file source launch needs the JDK, not only the JRE).
.PHONY: tls-test-deps nginx-deps
tls-test-deps:
	@missing=""; \
	test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	test -x /usr/sbin/apache2 || missing="$$missing apache2"; \
	command -v javac >/dev/null || missing="$$missing default-jdk-headless"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# nginx in front of the self-check for `make run`; without it the demo runs without it.
nginx-deps:
	@test -x /usr/sbin/nginx || { echo "Installing: nginx"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx) || \
	    echo "Could not install nginx: make run starts without the self-check."; }

# PostgreSQL and Redis run on this machine; start them if they are down.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
	@for i in $$(seq 1 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 1; done

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_DEBUG=true $(BIN)/mypy .
	DJANGO_DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run --skip-checks
	# The production security checks with only what production must set on a web host
	# (docs/deploy.md): no CA passphrase, PIN or outbox key, which only workers hold; secure
	# defaults for everything else.
	env -u DJANGO_DEBUG DJANGO_SECRET_KEY="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  DJANGO_ALLOWED_HOSTS=mycert.esante.lu \
	  MYCERT_BASE_URL=https://mycert.esante.lu MYCERT_PKI_BASE_URL=http://mycert.esante.lu \
	  OIDC_ISSUER=https://portail.esante.lu/oidc \
	  OIDC_CLIENT_SECRET="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(32))')" \
	  MYCERT_AUDIT_KEY="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(32))')" \
	  MYCERT_VAR_DIR="$$(mktemp -d)" \
	  $(BIN)/python manage.py check --deploy --tag security --fail-level WARNING

# The embedded defaults (SQLite, filesystem broker), the browser tests included.
# The unit tests on two processes (pytest-xdist); the browser and integration tests, which
# start Chromium and real processes, one at a time.
test-sqlite: setup browser-deps
	$(BIN)/python -m pytest -m "not browser and not integration" -n 2
	$(BIN)/python -m pytest -m "browser or integration"

# PostgreSQL and Redis: everything again, plus the integration tests with real workers
# (the browser tests ran above; they drive the UI, not the database).
test-postgres: setup services
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(REDIS_URL) $(BIN)/python -m pytest -m "not browser"

test: tls-test-deps lint test-sqlite test-postgres

# The fast inner loop: ruff, mypy and the tests that need neither a browser nor the
# integration services nor long fuzzing (`slow`), on SQLite, on two processes
# (pytest-xdist; each has its own database and CA). `make test` runs everything.
.PHONY: check
check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_DEBUG=true $(BIN)/mypy .
	$(BIN)/python -m pytest -m "not browser and not integration and not slow" -n 2 -q -p no:cacheprovider

messages: setup
	DJANGO_DEBUG=true $(BIN)/python manage.py makemessages -l fr -l de -l en --no-obsolete \
	  --ignore=.venv --ignore=var --ignore=tests --ignore=benchmarks
	DJANGO_DEBUG=true $(BIN)/python manage.py compilemessages --ignore=.venv

run: setup nginx-deps
	DJANGO_DEBUG=true $(BIN)/python manage.py demo

# The figures of docs/benchmarks.md (about 30 minutes on 2 cores): real PostgreSQL
# (database mycert_bench, created and dropped), Redis db 9, Celery workers, gunicorn,
# the SMTP sink, gpg, openssl; wrk and h2load generate the load, on loopback only.
# The relying-party figure runs nginx, Apache, the kit's Python server and Java (tls-test-deps).
benchmarks: setup services tls-test-deps
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@command -v wrk >/dev/null && command -v h2load >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client)
	$(BIN)/python -m benchmarks.run
