"""The one explicit training loop (on accelerate), its checkpoints and its logs."""
