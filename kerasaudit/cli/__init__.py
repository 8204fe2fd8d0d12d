"""The command-line layer: parse options, call one library function, format the result."""
