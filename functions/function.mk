# Shared by every function: SAM's makefile builder runs `build-<LogicalId>` in the function's folder.
# A function ships only its own modules; everything else comes from the common layer.
build-%:
	cp *.py "$(ARTIFACTS_DIR)/"
