"""One module per subcommand; each exposes ``command`` (see ``facecluster.cli.COMMANDS``)."""
