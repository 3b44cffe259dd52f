"""Exact parameter and multiply-accumulate (MAC) counts of a Keras model.

Transposed convolutions are counted exactly: each input pixel is multiplied into a
kh x kw x C_out footprint, i.e. MACs = H_in * W_in * kh * kw * C_in * C_out (not the inflated
output-size convention some papers use). Element-wise ops, BN and activations are not counted.
"""

from __future__ import annotations

import numpy as np
import tf_keras as keras


def _shape(t) -> list[int]:
    return [int(d) for d in t.shape[1:]]


def layer_macs(layer: keras.layers.Layer) -> int:
    """MACs of one call of ``layer`` for a batch of 1 (0 for layers without matmuls)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        oh, ow, oc = _shape(layer.output)
        kh, kw = layer.kernel_size
        return oh * ow * kh * kw * oc
    if isinstance(layer, keras.layers.Conv2DTranspose):
        ih, iw, ic = _shape(layer.input)
        kh, kw = layer.kernel_size
        return ih * iw * kh * kw * ic * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        oh, ow, oc = _shape(layer.output)
        ic = _shape(layer.input)[-1]
        kh, kw = layer.kernel_size
        return oh * ow * kh * kw * (ic // layer.groups) * oc
    if isinstance(layer, keras.layers.Dense):
        in_shape = _shape(layer.input)
        positions = int(np.prod(in_shape[:-1])) if len(in_shape) > 1 else 1
        return positions * in_shape[-1] * layer.units
    return 0


def count_macs(model: keras.Model) -> int:
    """Total MACs of conv, transposed-conv and dense layers for one input image."""
    return sum(layer_macs(layer) for layer in model.layers)


def summarize(model: keras.Model) -> dict:
    """Params, MACs and shapes of a model, as a JSON-ready dict."""
    return {
        "name": model.name,
        "params": int(model.count_params()),
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "macs": int(count_macs(model)),
        "input_shape": [int(d) for d in model.input_shape[1:]],
        "output_shape": [int(d) for d in model.output_shape[1:]],
    }
