"""The custom layer of the second stranger set's ``custom`` form: a conv block written as a
subclassed Keras layer, as research code often has. Pass this file to kerasaudit with
``--custom-objects benchmarks/stranger/custom_layers.py``."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="stranger")
class ConvBlock(layers.Layer):
    """Conv → BatchNorm → ReLU → max pooling, as one layer."""

    def __init__(self, filters: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = layers.Conv2D(filters, 3, padding="same", use_bias=False)
        self.norm = layers.BatchNormalization()
        self.pool = layers.MaxPooling2D()

    def build(self, input_shape: Any) -> None:
        self.conv.build(input_shape)
        self.norm.build((*input_shape[:-1], self.filters))

    def call(self, x: Any, training: Any = None) -> Any:
        return self.pool(keras.activations.relu(self.norm(self.conv(x), training=training)))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.pool.compute_output_shape((*input_shape[:-1], self.filters))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="stranger")
class Trunk(keras.Model):
    """A subclassed model used as the feature extractor of a Functional one (third set)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conv1 = layers.Conv2D(16, 3, padding="same", use_bias=False)
        self.norm1 = layers.BatchNormalization()
        self.conv2 = layers.Conv2D(32, 3, padding="same", activation="relu")
        self.pool = layers.MaxPooling2D()

    def call(self, x: Any, training: Any = None) -> Any:
        x = self.pool(keras.activations.relu(self.norm1(self.conv1(x), training=training)))
        return self.pool(self.conv2(x))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}


custom_objects = {"stranger>ConvBlock": ConvBlock, "stranger>Trunk": Trunk}
