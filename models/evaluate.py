"""Metrics and TF-free evaluation helpers (numpy + the TFLite interpreter only).

* :func:`uf1` / :func:`uar`: unweighted (macro) F1 and unweighted average recall, the
  MEGC composite-task metrics, over predictions pooled across LOSO folds;
* :func:`ridge_loso`: a linear ridge classifier per modality under leave-one-subject-out,
  the quick check that no single modality separates the classes trivially;
* :class:`Int8Runner`: runs any int8 TFLite model by its signature names (the variants
  use only some inputs), quantizing with the model's own parameters.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def confusion(y: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + p, minlength=k * k).reshape(k, k)


def uf1(y: np.ndarray, p: np.ndarray, k: int) -> float:
    c = confusion(np.asarray(y), np.asarray(p), k).astype(float)
    tp = np.diag(c)
    denom = 2 * tp + (c.sum(0) - tp) + (c.sum(1) - tp)
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1.mean())


def uar(y: np.ndarray, p: np.ndarray, k: int) -> float:
    c = confusion(np.asarray(y), np.asarray(p), k).astype(float)
    n = c.sum(1)
    return float(np.mean(np.divide(np.diag(c), n, out=np.zeros(k), where=n > 0)))


def _flat(data: Mapping[str, np.ndarray], mods: tuple[str, ...]) -> np.ndarray:
    return np.concatenate([data[m].reshape(len(data[m]), -1) for m in mods], axis=1)


def ridge_loso(data: Mapping[str, np.ndarray], mods: tuple[str, ...], target: str = "composite",
               lam: float = 10.0) -> tuple[float, float]:
    """(UF1, UAR) of a class-balanced ridge classifier, leave-one-subject-out."""
    x = _flat(data, mods).astype(np.float64)
    y = np.asarray(data[target])
    k = int(y.max()) + 1
    subj = np.asarray(data["subject"])
    pred = np.empty_like(y)
    for s in np.unique(subj):
        tr, te = subj != s, subj == s
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        xt = (x[tr] - mu) / sd
        w = 1.0 / np.bincount(y[tr], minlength=k)[y[tr]]  # balance the classes
        onehot = np.eye(k)[y[tr]] * 2 - 1
        a = xt.T @ (xt * w[:, None]) + lam * w.sum() / len(w) * np.eye(xt.shape[1])
        coef = np.linalg.solve(a, xt.T @ (onehot * w[:, None]))
        pred[te] = np.argmax(((x[te] - mu) / sd) @ coef, axis=1)
    return uf1(y, pred, k), uar(y, pred, k)


class Int8Runner:
    """A full-integer TFLite model called by its signature's input names."""

    def __init__(self, model: bytes) -> None:
        from edge.fusion import interpreter_class

        cls, _ = interpreter_class()
        self.it = cls(model_content=model, num_threads=1)
        self.it.allocate_tensors()
        runner = self.it.get_signature_runner()
        self.ins = dict(runner.get_input_details())
        self.outs = dict(runner.get_output_details())

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Float inputs (n, ...) -> float outputs (n, classes), one invoke per row."""
        n = len(next(iter(inputs.values())))
        out = {k: np.empty((n, int(d["shape"][-1])), np.float32) for k, d in self.outs.items()}
        for i in range(n):
            for k, d in self.ins.items():
                x = inputs[k][i:i + 1].astype(np.float32)
                s, z = d["quantization"]
                if np.dtype(d["dtype"]) == np.int8:
                    x = np.clip(np.round(x / s) + z, -128, 127).astype(np.int8)
                # else: an input no op reads (a variant's unused branch) stays float
                self.it.set_tensor(d["index"], x)
            self.it.invoke()
            for k, d in self.outs.items():
                s, z = d["quantization"]
                out[k][i] = (self.it.get_tensor(d["index"])[0].astype(np.float32) - z) * s
        return out
