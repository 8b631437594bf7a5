"""The fusion network (Keras): three small branches, concatenation, two softmax heads.

* visual: STSTNet-sized (Liong et al. 2019): three parallel 3x3 convolutions with 3, 5
  and 8 filters on the 28x28x3 flow/strain input, ReLU, 3x3 max pooling, concatenation,
  2x2 average pooling (5x5x16 = 400), then a dense layer to ``VIS_UNITS``;
* eeg: dense 32 -> 16 on the 80 band-power/DE values;
* periph: dense 16 -> 8 on the 9 peripheral responses;
* fusion: concatenation, dropout, dense 32, heads ``composite`` (3) and ``emotion`` (7).

Variants with a subset of branches (``modalities``) share the same code: visual-only
and physiology-only (EEG + peripheral) models for comparison. Every variant keeps all
three inputs so the same data feeds each; an unused input simply goes nowhere (the
exporter only exports the full model).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from edge.fusion import COMPOSITES, EEG_DIM, EMOTIONS, PERIPH_NAMES, VISUAL_SHAPE

VIS_UNITS = 16
FULL = ("visual", "eeg", "periph")
VISUAL_ONLY = ("visual",)
PHYSIO_ONLY = ("eeg", "periph")
VARIANTS = {"fused": FULL, "visual": VISUAL_ONLY, "physio": PHYSIO_ONLY}


def _drop(rate: float, name: str, train: bool):
    """Dropout when training; identity otherwise (no seed-state variable to export)."""
    return layers.Dropout(rate, name=name) if train and rate > 0 else (lambda t: t)


def _visual_branch(x: keras.KerasTensor, l2: float, train: bool) -> keras.KerasTensor:
    reg = keras.regularizers.L2(l2)
    towers = [layers.Conv2D(f, 3, padding="same", activation="relu", kernel_regularizer=reg,
                            name=f"vis_conv{f}")(x) for f in (3, 5, 8)]
    towers = [layers.MaxPooling2D(3, strides=3, padding="same", name=f"vis_pool{f}")(t)
              for f, t in zip((3, 5, 8), towers, strict=True)]
    y = layers.Concatenate(name="vis_cat")(towers)  # 10x10x16
    y = layers.AveragePooling2D(2, name="vis_avg")(y)  # 5x5x16
    y = layers.Flatten(name="vis_flat")(y)
    y = _drop(0.3, "vis_drop", train)(y)
    return layers.Dense(VIS_UNITS, activation="relu", kernel_regularizer=reg, name="vis_fc")(y)


def _dense_branch(x: keras.KerasTensor, name: str, units: Sequence[int], l2: float,
                  dropout: float, train: bool) -> keras.KerasTensor:
    reg = keras.regularizers.L2(l2)
    y = _drop(dropout, f"{name}_in_drop", train)(x)
    for i, u in enumerate(units):
        y = layers.Dense(u, activation="relu", kernel_regularizer=reg, name=f"{name}_fc{i}")(y)
    return y


def build(modalities: Sequence[str] = FULL, l2: float = 1e-3, seed: int = 0,
          train: bool = True) -> keras.Model:
    """A model with inputs visual/eeg/periph and outputs composite/emotion; ``train=False``
    leaves out the dropout layers (same weights by layer name: see :func:`inference_copy`)."""
    keras.utils.set_random_seed(seed)
    vis = keras.Input(VISUAL_SHAPE, name="visual")
    eeg = keras.Input((EEG_DIM,), name="eeg")
    per = keras.Input((len(PERIPH_NAMES),), name="periph")
    parts = []
    if "visual" in modalities:
        parts.append(_visual_branch(vis, l2, train))
    if "eeg" in modalities:
        parts.append(_dense_branch(eeg, "eeg", (32, 16), l2, 0.2, train))
    if "periph" in modalities:
        parts.append(_dense_branch(per, "per", (16, 8), l2, 0.1, train))
    if not parts:
        raise ValueError("need at least one modality")
    h = parts[0] if len(parts) == 1 else layers.Concatenate(name="fuse")(parts)
    h = _drop(0.3, "fuse_drop", train)(h)
    h = layers.Dense(32, activation="relu", kernel_regularizer=keras.regularizers.L2(l2),
                     name="fuse_fc")(h)
    comp = layers.Dense(len(COMPOSITES), activation="softmax", name="composite")(h)
    emo = layers.Dense(len(EMOTIONS), activation="softmax", name="emotion")(h)
    return keras.Model({"visual": vis, "eeg": eeg, "periph": per},
                       {"composite": comp, "emotion": emo}, name="mmme_fusion")


def compile_model(model: keras.Model, lr: float = 3e-3) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss={"composite": "sparse_categorical_crossentropy",
              "emotion": "sparse_categorical_crossentropy"},
        loss_weights={"composite": 1.0, "emotion": 0.5},
    )
    return model


def inference_copy(model: keras.Model, modalities: Sequence[str] = FULL) -> keras.Model:
    """The same network without dropout layers, weights copied by layer name (export)."""
    inf = build(modalities, train=False)
    for layer in inf.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return inf
