"""Weights trained at 4 bits or fewer, and checking that the file stores them as INT4.

On TF 2.21 the converter's QAT path reads the bit width of each weight's
fake-quant op and stores a weight trained at 4 bits as an INT4 tensor (two
values per byte); nothing has to be rewritten. :func:`check_int4_storage`
makes sure of it after every int8 conversion, so a converter that stopped
doing so fails loudly instead of silently doubling the file. See
``docs/int4.md`` for the routes measured.
"""

from __future__ import annotations

import re

from collabopt.errors import ConversionError
from collabopt.layers import wrapper_chain
from collabopt.transform import iter_layers

#: Weights trained with at most this many bits are stored as INT4.
INT4_BITS = 4


def low_bit_weights(model) -> list[tuple[str, str, int]]:
    """``[(wrapper name, weight name, bits)]`` for every weight quantized with <= 4 bits in ``model``."""
    found = []
    for layer in iter_layers(model):
        for wrapper in wrapper_chain(layer):
            for name, quantizer in wrapper.weight_quantizers.items():
                if quantizer.num_bits <= INT4_BITS:
                    found.append((wrapper.name, name, quantizer.num_bits))
    return found


def check_int4_storage(graph, model) -> None:
    """Raises :class:`ConversionError` unless every <= 4-bit weight of ``model`` is an INT4 tensor of ``graph``.

    Args:
        graph: The parsed flatbuffer (:func:`collabopt.tflite.flatbuffer.parse`).
        model: The QAT model it was converted from.
    """
    wanted = low_bit_weights(model)
    if not wanted:
        return
    int4 = [t.name for t in graph.tensors if t.dtype == "int4" and t.data is not None]
    if len(int4) >= len(wanted):
        return
    missing = sorted(
        {layer for layer, _, _ in wanted if not any(re.search(rf"(?<![\w]){re.escape(layer)}(?:_\d+)?/", n) for n in int4)}
    )
    raise ConversionError(
        f"the model trains {len(wanted)} weights at 4 bits or fewer, but the converted file stores only "
        f"{len(int4)} INT4 tensors (layers not found among them: {missing or 'unknown'}). This TensorFlow's "
        "converter does not store the trained 4-bit weights as INT4; train them at 8 bits "
        "(Default8BitQuantizeScheme) or use a TensorFlow whose converter reads fake-quant bit widths (2.21)."
    )
