"""Full-integer int8 TFLite export (TensorFlow needed: the training venv only).

TFLiteConverter from a SavedModel signature (so tensor names carry the input names
``visual``, ``eeg``, ``periph``), ``Optimize.DEFAULT``, a representative dataset drawn
from training inputs, ``TFLITE_BUILTINS_INT8`` only, and int8 input and output types:
every tensor is int8 and the device needs no float kernels.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

INPUT_ORDER = ("visual", "eeg", "periph")


def _convert(model: keras.Model, specs: dict[str, tf.TensorSpec],
             gen: Callable[[], Iterator[dict[str, np.ndarray]]]) -> bytes:
    # Keras 3's ExportArchive freezes the weights cleanly (a hand-made tf.Module keeps
    # READ_VARIABLE ops that fail calibration) and names the signature's tensors.
    with tempfile.TemporaryDirectory() as d:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", lambda x: model(x, training=False),
                             input_signature=[specs])
        archive.write_out(d, verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(d)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        return bytes(conv.convert())


def to_int8(model: keras.Model, representative: dict[str, np.ndarray],
            n_calib: int = 300, seed: int = 0) -> bytes:
    """The int8 flatbuffer of ``model`` (an inference copy without dropout, see
    models.fusion.inference_copy); calibration on up to n_calib rows of the inputs."""
    n = len(representative["eeg"])
    idx = np.random.default_rng(seed).permutation(n)[:n_calib]

    def gen() -> Iterator[dict[str, np.ndarray]]:
        for i in idx:
            yield {k: representative[k][i:i + 1].astype(np.float32) for k in INPUT_ORDER}

    specs = {k: tf.TensorSpec((1, *model.input[k].shape[1:]), tf.float32, name=k)
             for k in INPUT_ORDER}
    return _convert(model, specs, gen)


def wrong_model() -> bytes:
    """A tiny valid int8 model that is not the fusion model (one input eeg (1, 80) -> one
    output composite (1, 3)): the fixture for the runtime's spec check."""
    x = keras.Input((80,), name="eeg")
    y = keras.layers.Dense(3, activation="softmax", name="composite")(x)
    m = keras.Model({"eeg": x}, {"composite": y})

    def gen() -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng(0)
        for _ in range(20):
            yield {"eeg": rng.standard_normal((1, 80)).astype(np.float32)}

    return _convert(m, {"eeg": tf.TensorSpec((1, 80), tf.float32, name="eeg")}, gen)


def write(path: Path, data: bytes) -> Path:
    """The model file and its ``.sha256`` sidecar, which the runtime checks before the
    interpreter sees a byte (tflite-runtime crashes on a truncated file)."""
    import hashlib

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    Path(f"{path}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    return path
