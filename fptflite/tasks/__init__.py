"""Tasks: configs and the training loop (the Model Garden's "tasks" layer)."""
