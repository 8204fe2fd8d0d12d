"""The command-line layer: parse options, call one library function, hand the result to a formatter."""
