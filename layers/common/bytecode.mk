# Bytecode for the Lambda interpreter, shared by layers/common/Makefile and functions/*/Makefile.
#
# Lambda's code is read-only (/opt for a layer, /var/task for a function), so a module shipped
# without a usable .pyc is compiled again on every cold start. sam build therefore compiles every
# artifact with CPython 3.13, the python3.13 runtime's interpreter (the magic number is the same for
# every 3.13.x). The .pyc are unchecked hash-based (PEP 552): Lambda loads them without comparing the
# source's mtime, which a zip does not keep faithfully. tests/build checks the result.
#
# Include it relative to the including Makefile (sam build runs make in a scratch copy of the
# CodeUri, with --makefile naming the source Makefile by its absolute path):
#   include $(dir $(abspath $(lastword $(MAKEFILE_LIST))))<path to layers/common>/bytecode.mk
# and in the build recipe, after the sources are in place:
#   $(call compile_bytecode,$(ARTIFACTS_DIR),<where Lambda mounts it: /opt or /var/task>)
# (a third argument, 0, compiles with one process per CPU: worth it for the layer's ~3,300 files).
#
# sam build's cache (samconfig: cached = true) keys a function on its own folder only, so after
# editing this file rebuild with `sam build --no-cached` (or `make clean build`).

# The interpreter: PYTHON313=/path/to/python3.13 (environment or make variable) if given; else the
# first of these that runs and is 3.13: python3.13 on PATH (a pyenv shim is there but fails when 3.13
# is not a selected version), $(pyenv root)/versions/3.13*, ~/.pyenv/versions/3.13* (newest first).
# Free-threaded builds (3.13t) are refused: Lambda runs the default build.
BYTECODE_IS_313 := import sys, sysconfig; sys.exit(sys.version_info[:2] != (3, 13) or bool(sysconfig.get_config_var("Py_GIL_DISABLED")))

ifeq ($(strip $(PYTHON313)),)
PYTHON313 := $(shell \
	for p in "$$(command -v python3.13)" \
		$$(ls -d "$$(pyenv root 2>/dev/null)"/versions/3.13*/bin/python3.13 \
			"$$HOME"/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null | sort -ruV); do \
		[ -n "$$p" ] && "$$p" -c '$(BYTECODE_IS_313)' >/dev/null 2>&1 \
			&& { "$$p" -c 'import sys; print(sys.executable)'; break; }; \
	done)
endif

define BYTECODE_NO_PYTHON
sam build compiles the bytecode it ships with CPython 3.13, the Lambda python3.13 runtime's interpreter, and
found none: no working python3.13 on PATH, none in $$(pyenv root)/versions/3.13* or ~/.pyenv/versions/3.13*.
Provide one, any of:
  pyenv install 3.13              (it need not be the selected version)
  a distro or deadsnakes python3.13 on PATH
  PYTHON313=/path/to/python3.13 make build
endef
export BYTECODE_NO_PYTHON

# $(require_python313): fail unless PYTHON313 is a working CPython 3.13 (a recipe can check first,
# before slow steps; compile_bytecode checks anyway).
define require_python313
	@test -n "$(PYTHON313)" || { echo "$$BYTECODE_NO_PYTHON" >&2; exit 1; }
	@"$(PYTHON313)" -c '$(BYTECODE_IS_313)' 2>/dev/null || { \
		echo "PYTHON313=$(PYTHON313) is not a working CPython 3.13 (default, not free-threaded, build)." >&2; \
		echo "$$BYTECODE_NO_PYTHON" | tail -n 4 >&2; exit 1; }
endef

# $(call compile_bytecode,<artifact dir>,<the directory Lambda puts that artifact in>[,<workers, 0: one per CPU>])
# Stale __pycache__ (the source tree's are cpython-311 from the dev venv) go first. -s/-p record
# the path the module has on Lambda in the bytecode, not this machine's build folder, so the .pyc do
# not depend on where the checkout is. compileall fails the build if any file does not compile.
define compile_bytecode
	$(require_python313)
	find "$(1)" -name __pycache__ -type d -prune -exec rm -rf {} +
	"$(PYTHON313)" -m compileall -q -j $(or $(3),1) --invalidation-mode unchecked-hash -s "$(1)" -p "$(2)" "$(1)"
endef
