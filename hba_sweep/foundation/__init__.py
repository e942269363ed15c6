"""Foundation layer: errors, atomic file I/O, credential redaction, storage of paths and URIs,
option choices, devices and YAML reading. Imports nothing else from hba_sweep."""
