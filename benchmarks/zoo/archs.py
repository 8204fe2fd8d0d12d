"""The zoo's architectures: small Fashion-MNIST CNNs of different shapes (28×28×1 → 10).

| name | BatchNorm | head | special |
| --- | --- | --- | --- |
| vgg_bn | yes | Flatten + Dense | Conv-BN-ReLU blocks, max pooling |
| plain | no | Flatten + Dense | Conv-ReLU with biases, no normalisation |
| resnet | yes | global average pooling | residual ``Add`` blocks with a projection shortcut |
| nested | yes | global average pooling + Dense | the feature extractor is a nested ``Sequential`` |
| sepconv | yes | global average pooling | SeparableConv2D and DepthwiseConv2D + 1×1 convs |
"""

from __future__ import annotations

from typing import Any

ARCHS = ("vgg_bn", "plain", "resnet", "nested", "sepconv")


def build(name: str) -> Any:
    import keras
    from keras import layers as L

    inp = keras.Input((28, 28, 1), name="image")
    if name == "vgg_bn":
        h = inp
        for i, width in enumerate((16, 16, 32, 32, 64), start=1):
            h = L.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(h)
            h = L.BatchNormalization(momentum=0.9, name=f"bn{i}")(h)
            h = L.ReLU(name=f"relu{i}")(h)
            if i in (2, 4):
                h = L.MaxPooling2D(name=f"pool{i}")(h)
        h = L.Flatten(name="flatten")(h)
        h = L.Dropout(0.3, name="dropout")(h)
        h = L.Dense(64, activation="relu", name="fc")(h)
    elif name == "plain":
        h = L.Conv2D(32, 3, activation="relu", name="conv1")(inp)
        h = L.Conv2D(32, 3, activation="relu", name="conv2")(h)
        h = L.MaxPooling2D(name="pool2")(h)
        h = L.Conv2D(64, 3, activation="relu", name="conv3")(h)
        h = L.MaxPooling2D(name="pool3")(h)
        h = L.Flatten(name="flatten")(h)
        h = L.Dense(128, activation="relu", name="fc")(h)
    elif name == "resnet":
        h = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp)
        h = L.BatchNormalization(momentum=0.9, name="stem_bn")(h)
        h = L.ReLU(name="stem_relu")(h)
        for i, (width, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            shortcut = h
            r = L.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                         name=f"b{i}_conv1")(h)  # fmt: skip
            r = L.BatchNormalization(momentum=0.9, name=f"b{i}_bn1")(r)
            r = L.ReLU(name=f"b{i}_relu1")(r)
            r = L.Conv2D(width, 3, padding="same", use_bias=False, name=f"b{i}_conv2")(r)
            r = L.BatchNormalization(momentum=0.9, name=f"b{i}_bn2")(r)
            if stride != 1 or shortcut.shape[-1] != width:
                shortcut = L.Conv2D(width, 1, strides=stride, use_bias=False,
                                    name=f"b{i}_proj")(shortcut)  # fmt: skip
                shortcut = L.BatchNormalization(momentum=0.9, name=f"b{i}_proj_bn")(shortcut)
            h = L.Add(name=f"b{i}_add")([r, shortcut])
            h = L.ReLU(name=f"b{i}_out")(h)
        h = L.GlobalAveragePooling2D(name="gap")(h)
    elif name == "nested":
        features = keras.Sequential(name="features")
        for i, width in enumerate((32, 32, 64), start=1):
            features.add(L.Conv2D(width, 3, padding="same", use_bias=False, name=f"f_conv{i}"))
            features.add(L.BatchNormalization(momentum=0.9, name=f"f_bn{i}"))
            features.add(L.ReLU(name=f"f_relu{i}"))
            features.add(L.MaxPooling2D(name=f"f_pool{i}"))
        h = features(inp)
        h = L.GlobalAveragePooling2D(name="gap")(h)
        h = L.Dense(64, activation="relu", name="fc")(h)
    elif name == "sepconv":
        h = L.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inp)
        h = L.BatchNormalization(momentum=0.9, name="bn1")(h)
        h = L.ReLU(name="relu1")(h)
        h = L.SeparableConv2D(32, 3, padding="same", use_bias=False, name="sep2")(h)
        h = L.BatchNormalization(momentum=0.9, name="bn2")(h)
        h = L.ReLU(name="relu2")(h)
        h = L.MaxPooling2D(name="pool2")(h)
        h = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw3")(h)
        h = L.BatchNormalization(momentum=0.9, name="bn3")(h)
        h = L.ReLU(name="relu3")(h)
        h = L.Conv2D(64, 1, use_bias=False, name="pw3")(h)
        h = L.BatchNormalization(momentum=0.9, name="bn3b")(h)
        h = L.ReLU(name="relu3b")(h)
        h = L.MaxPooling2D(name="pool3")(h)
        h = L.SeparableConv2D(96, 3, padding="same", use_bias=False, name="sep4")(h)
        h = L.BatchNormalization(momentum=0.9, name="bn4")(h)
        h = L.ReLU(name="relu4")(h)
        h = L.GlobalAveragePooling2D(name="gap")(h)
    else:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}")
    out = L.Dense(10, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name=name)
