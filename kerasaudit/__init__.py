"""kerasaudit: audit saved Keras models for backdoors and prune them out.

Importing this package is cheap: TensorFlow and Keras are imported lazily, inside the
functions that need them (see ``kerasaudit._tf``).
"""

__version__ = "0.1.0"
