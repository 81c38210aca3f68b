"""One module per subcommand: parse options, call one core function, print the result."""
