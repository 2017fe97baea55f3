"""The mmreplay command line: one module per subcommand."""
