"""One thin Click module per `lltrace` subcommand; the logic lives in `lltrace/`."""
