# pg_observe: build with PGXS, and the project's two set-up commands (make demo, make test).
#
#   make            build extension/pg_observe--<version>.sql from sql/ and plpython/
#   make install    install it into PostgreSQL 15 (as root)
#   make demo       install what is needed, start the local cluster, run the demo
#   make test       the same set-up, then pgTAP, pytest, plpgsql_check, ruff
#   make bench      benchmarks, one JSON object per figure (not part of make test)
#   make stop       stop the local cluster

EXT_NAME    = pg_observe
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" extension/$(EXT_NAME).control)
PIECES      = $(sort $(wildcard sql/[0-9]*.sql))
PYBODIES    = $(wildcard plpython/*.py)
INCLUDES    = $(wildcard sql/include/*.sql)
# Released install scripts are kept as they shipped; upgrades are built from sql/updates/.
RELEASES    = $(patsubst sql/releases/%,extension/%,$(wildcard sql/releases/$(EXT_NAME)--*.sql))
UPDATES     = $(patsubst sql/updates/%,extension/%,$(wildcard sql/updates/$(EXT_NAME)--*--*.sql))
INSTALL_SQL = extension/$(EXT_NAME)--$(EXTVERSION).sql

MODULEDIR   = extension
DATA        = extension/$(EXT_NAME).control
DATA_built  = $(INSTALL_SQL) $(UPDATES) $(RELEASES)

PG_CONFIG  ?= /usr/lib/postgresql/15/bin/pg_config
PGXS       := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
else
all: $(DATA_built)
install:
	@echo "PostgreSQL 15 server development files are missing: run 'make setup' first" >&2; exit 1
endif

$(INSTALL_SQL): $(PIECES) $(INCLUDES) $(PYBODIES) scripts/build_sql.py extension/$(EXT_NAME).control
	python3 scripts/build_sql.py $@ $(PIECES)

extension/$(EXT_NAME)--%.sql: sql/updates/$(EXT_NAME)--%.sql $(PIECES) $(INCLUDES) $(PYBODIES) scripts/build_sql.py
	python3 scripts/build_sql.py $@ $<

$(RELEASES): extension/%: sql/releases/%
	cp $< $@

.PHONY: setup cluster demo test test-only bench stop psql
setup:
	scripts/setup.sh

cluster: setup
	$(MAKE) install
	scripts/cluster.sh start

demo: cluster
	scripts/demo.sh

test: cluster
	scripts/run_tests.sh

test-only:
	scripts/run_tests.sh

bench: cluster
	scripts/bench.sh

stop:
	scripts/cluster.sh stop

psql:
	psql "$$(scripts/cluster.sh dsn)"
