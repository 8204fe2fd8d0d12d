"""The zoo's architectures: small Fashion-MNIST CNNs of different shapes (28×28×1 → 10).

| name | BatchNorm | head | special |
| --- | --- | --- | --- |
| vgg_bn | yes | Flatten + Dense | Conv-BN-ReLU blocks, max pooling |
| plain | no | Flatten + Dense | Conv-ReLU with biases, no normalisation |
| resnet | yes | global average pooling | residual ``Add`` blocks with a projection shortcut |
| nested | yes | global average pooling + Dense | the feature extractor is a nested ``Sequential`` |
| sepconv | yes | global average pooling | SeparableConv2D and DepthwiseConv2D + 1×1 convs |
| lenet | no | Flatten + two Dense | LeNet-5: 5×5 tanh convs, average pooling |
| mobile | yes | global average pooling | strided stem, MobileNetV2 blocks (ReLU6, ``Add``) |
| dense | yes | global average pooling | DenseNet blocks (pre-activation, ``Concatenate``) |
| wide | no | global max pooling | 5×5 ELU convs, wide, dropout |

The last four were added after the verdict's first calibrations, to give its clean tails more
architectures than the first five.
"""

from __future__ import annotations

from typing import Any

ARCHS = ("vgg_bn", "plain", "resnet", "nested", "sepconv", "lenet", "mobile", "dense", "wide")


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
    elif name == "lenet":
        h = L.Conv2D(6, 5, padding="same", activation="tanh", name="c1")(inp)
        h = L.AveragePooling2D(2, name="s2")(h)
        h = L.Conv2D(16, 5, activation="tanh", name="c3")(h)
        h = L.AveragePooling2D(2, name="s4")(h)
        h = L.Flatten(name="flatten")(h)
        h = L.Dense(120, activation="tanh", name="f5")(h)
        h = L.Dense(84, activation="tanh", name="f6")(h)
    elif name == "mobile":
        h = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
        h = L.BatchNormalization(momentum=0.9, name="stem_bn")(h)
        h = L.ReLU(6.0, name="stem_relu")(h)
        for i, (width, stride) in enumerate(((16, 1), (24, 2), (24, 1), (32, 1)), 1):
            x0 = h
            r = L.Conv2D(3 * int(h.shape[-1]), 1, use_bias=False, name=f"ir{i}_expand")(h)
            r = L.BatchNormalization(momentum=0.9, name=f"ir{i}_expand_bn")(r)
            r = L.ReLU(6.0, name=f"ir{i}_expand_relu")(r)
            r = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                  name=f"ir{i}_dw")(r)  # fmt: skip
            r = L.BatchNormalization(momentum=0.9, name=f"ir{i}_dw_bn")(r)
            r = L.ReLU(6.0, name=f"ir{i}_dw_relu")(r)
            r = L.Conv2D(width, 1, use_bias=False, name=f"ir{i}_project")(r)
            r = L.BatchNormalization(momentum=0.9, name=f"ir{i}_project_bn")(r)
            h = L.Add(name=f"ir{i}_add")([x0, r]) if stride == 1 and x0.shape[-1] == width else r
        h = L.Conv2D(96, 1, use_bias=False, name="head")(h)
        h = L.BatchNormalization(momentum=0.9, name="head_bn")(h)
        h = L.ReLU(6.0, name="head_relu")(h)
        h = L.GlobalAveragePooling2D(name="gap")(h)
    elif name == "dense":
        h = L.Conv2D(24, 3, padding="same", use_bias=False, name="stem")(inp)
        h = L.MaxPooling2D(name="stem_pool")(h)
        for b in (1, 2):
            for j in range(1, 4):
                r = L.BatchNormalization(momentum=0.9, name=f"d{b}_{j}_bn")(h)
                r = L.ReLU(name=f"d{b}_{j}_relu")(r)
                r = L.Conv2D(12, 3, padding="same", use_bias=False, name=f"d{b}_{j}_conv")(r)
                h = L.Concatenate(name=f"d{b}_{j}_cat")([h, r])
            h = L.BatchNormalization(momentum=0.9, name=f"t{b}_bn")(h)
            h = L.ReLU(name=f"t{b}_relu")(h)
            h = L.Conv2D(int(h.shape[-1]) // 2, 1, use_bias=False, name=f"t{b}_conv")(h)
            h = L.AveragePooling2D(2, name=f"t{b}_pool")(h)
        h = L.GlobalAveragePooling2D(name="gap")(h)
    elif name == "wide":
        h = L.Conv2D(48, 5, padding="same", activation="elu", name="conv1")(inp)
        h = L.MaxPooling2D(name="pool1")(h)
        h = L.Conv2D(96, 5, padding="same", activation="elu", name="conv2")(h)
        h = L.MaxPooling2D(name="pool2")(h)
        h = L.Conv2D(128, 3, padding="same", activation="elu", name="conv3")(h)
        h = L.GlobalMaxPooling2D(name="gmp")(h)
        h = L.Dropout(0.3, name="dropout")(h)
    else:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}")
    out = L.Dense(10, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name=name)
