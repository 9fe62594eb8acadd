"""exectrack consumer: folds execution events into MySQL rows."""
