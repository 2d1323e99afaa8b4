"""Keras callbacks for pruning: UpdatePruningStep and PruningSummaries."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from collabopt.errors import InvalidArgumentError
from collabopt.layers import wrapper_chain
from collabopt.sparsity.wrapper import PruneLowMagnitude
from collabopt.transform import iter_layers


def pruning_wrappers(model) -> list[PruneLowMagnitude]:
    """Every PruneLowMagnitude wrapper of ``model`` (nested models included)."""
    return [w for layer in iter_layers(model) for w in wrapper_chain(layer) if isinstance(w, PruneLowMagnitude)]


class UpdatePruningStep(keras.callbacks.Callback):
    """Accepted for TFMOT compatibility, and checks that the model is prunable.

    collabopt's pruning wrappers advance their own step counter (a variable)
    on every training call, so this callback is not required: ``fit`` without
    it, or a custom ``GradientTape`` loop, prunes on the same schedule. It
    raises if the model being trained has no pruning wrappers, as TFMOT does.
    """

    def on_train_begin(self, logs=None):
        if not pruning_wrappers(self.model):
            raise InvalidArgumentError(
                f"UpdatePruningStep: model '{self.model.name}' has no pruning wrappers; wrap it with "
                "prune_low_magnitude first."
            )


class PruningSummaries(keras.callbacks.Callback):
    """Writes TensorBoard scalars: sparsity of each pruned weight and the schedule's target.

    Args:
        log_dir: Folder for the event files.
        update_freq: ``"epoch"`` or a number of batches between writes.
    """

    def __init__(self, log_dir, update_freq="epoch"):
        super().__init__()
        if update_freq != "epoch" and not (isinstance(update_freq, int) and update_freq >= 1):
            raise InvalidArgumentError(f"update_freq must be 'epoch' or an integer >= 1; received {update_freq!r}.")
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise InvalidArgumentError(
                "PruningSummaries writes TensorBoard summaries and needs the tensorboard package: "
                "`pip install 'collabopt[tensorboard]'` (or `pip install tensorboard`)."
            )
        self.log_dir = str(log_dir)
        self.update_freq = update_freq
        self._writer = None
        self._batches = 0

    def _write(self, step):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for wrapper in pruning_wrappers(self.model):
                for name, mask in wrapper.masks.items():
                    sparsity = 1.0 - float(np.mean(ops.convert_to_numpy(mask)))
                    tf.summary.scalar(f"{wrapper.base_layer.name}/{name}/sparsity", sparsity, step=step)
                _, target = wrapper.pruning_schedule(wrapper.pruning_step)
                tf.summary.scalar(f"{wrapper.base_layer.name}/target_sparsity", float(target), step=step)
            self._writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.update_freq != "epoch" and self._batches % self.update_freq == 0:
            self._write(self._batches)

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._write(epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
