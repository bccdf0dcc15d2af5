"""The runtime-spec model: config.json and state.json, hooks, features."""

OCI_VERSION = "1.2.0"  # the runtime-spec version rune implements (the ociVersion of `rune spec` and `rune state`)
