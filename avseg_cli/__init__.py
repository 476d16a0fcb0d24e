"""avseg command-line interface (thin: parses options, prints, maps errors to exit codes)."""
