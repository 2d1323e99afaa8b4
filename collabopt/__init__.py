"""collabopt: collaborative model optimization for Keras 3.

Pruning, weight clustering and quantization-aware training that can be chained
without one stage undoing what the previous one achieved, ending in a
deployable TFLite model.

Training-time API: ``import collabopt.keras as co``.
Export and inspection: ``import collabopt.tflite``.
"""

__version__ = "0.1.0"
