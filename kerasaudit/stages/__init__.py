"""The stages of an audit, one module each with a typed result: ``scan`` (clean statistics),
``prune`` (zeroing channels, optional fine-tuning), ``sweep`` (accuracy/ASR against ratio),
``reverse`` (trigger recovery and the verdict), ``defend`` (recover, prune, unlearn),
``gradcam`` (class activation maps), ``audit`` (everything a verdict needs).
``kerasaudit.api`` wraps them for library users; the CLI calls the same functions."""
