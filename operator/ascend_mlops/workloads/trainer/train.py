"""The training loop: a custom loop over a tf.distribute strategy.

Keras 3's `Model.fit` does not run under MultiWorkerMirroredStrategy
(keras-team/keras#20585), so the loop is ours: `strategy.run` of one
gradient step, gradients all-reduced by the strategy, the same code for one
worker (default strategy) and many. Validation runs on each worker locally
with identical weights, so early-stopping decisions agree without talking.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import evaluation, models, pipeline
from .dataset import Split
from .distribute import Cluster
from .params import TrainConfig
from .progress import EpochProgress

log = logging.getLogger(__name__)


def make_strategy(cluster: Cluster) -> tf.distribute.Strategy:
    """Must run before any other TensorFlow op: collectives are set up at context creation."""
    if cluster.multi_worker:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


@dataclasses.dataclass
class TrainResult:
    weights: list[np.ndarray]  # of the best epoch
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    history: list[EpochProgress]
    train_seconds: float
    images_per_second: float
    stopped_early: bool


class Trainer:
    def __init__(self, config: TrainConfig, num_classes: int, strategy: tf.distribute.Strategy) -> None:
        self.config = config
        self.hp = config.hparams
        self.strategy = strategy
        self.num_classes = num_classes
        with strategy.scope():
            self.model = models.build(config.algorithm, num_classes, self.hp.image_size, seed=config.seed)
            if config.weights is not None:
                models.warm_start(self.model, config.weights)
            self.optimizer = keras.optimizers.SGD(
                learning_rate=self.hp.learning_rate,
                momentum=self.hp.momentum,
                weight_decay=self.hp.weight_decay or None,
            )
            # Decay kernels only: shrinking batch-norm scales/offsets and biases only hurts.
            self.optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
            self.optimizer.build(self.model.trainable_variables)
        self._train_step = self._make_train_step()
        self._predict = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    # -- steps ------------------------------------------------------------
    def _make_train_step(self) -> Callable[[Any], tuple[tf.Tensor, tf.Tensor]]:
        model, optimizer, strategy = self.model, self.optimizer, self.strategy
        global_batch = self.hp.batch_size

        def replica_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            correct = tf.reduce_sum(
                tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
            )
            return tf.reduce_sum(per_example), correct

        @tf.function  # type: ignore[untyped-decorator]
        def train_step(batch: Any) -> tuple[tf.Tensor, tf.Tensor]:
            loss_sum, correct = strategy.run(replica_step, args=batch)
            return (
                strategy.reduce(tf.distribute.ReduceOp.SUM, loss_sum, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
            )

        return train_step

    def distribute(self, dataset: tf.data.Dataset) -> Iterator[Any]:
        return iter(self.strategy.experimental_distribute_dataset(dataset))

    def run_steps(self, iterator: Iterator[Any], steps: int) -> tuple[float, float]:
        """Train `steps` global batches; return (mean loss, accuracy) over them."""
        loss_sum = correct = 0.0
        for _ in range(steps):
            loss, hits = self._train_step(next(iterator))
            loss_sum += float(loss)
            correct += float(hits)
        seen = steps * self.hp.batch_size
        return loss_sum / seen, correct / seen

    def predict(self, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
        """(labels, logits) over a finite dataset, on this worker alone."""
        labels: list[np.ndarray] = []
        logits: list[np.ndarray] = []
        for images, y in dataset:
            logits.append(np.asarray(self._predict(images)))
            labels.append(np.asarray(y))
        return np.concatenate(labels), np.concatenate(logits)

    # -- the loop ---------------------------------------------------------
    def fit(self, split: Split) -> TrainResult:
        hp = self.hp
        cache = pipeline.fits_in_memory(len(split.train) + len(split.validation), hp.image_size)
        if not cache:
            log.info("dataset too large to cache decoded in memory: decoding every epoch")
        train_ds = pipeline.training_dataset(split.train, hp.image_size, hp.batch_size, self.config.seed, cache)
        val_ds = pipeline.evaluation_dataset(split.validation, hp.image_size, hp.batch_size, cache)
        iterator = self.distribute(train_ds)
        steps = max(1, math.ceil(len(split.train) / hp.batch_size))
        log.info(
            "training %s on %d images (%d validation), %d classes, %dx%d, batch %d, %d steps/epoch, up to %d epochs",
            self.config.algorithm, len(split.train), len(split.validation), self.num_classes,
            hp.image_size, hp.image_size, hp.batch_size, steps, hp.epochs,
        )
        history: list[EpochProgress] = []
        best_loss = math.inf
        best_epoch = 0
        best_weights: list[np.ndarray] | None = None
        train_seconds = 0.0
        started = time.monotonic()
        epoch = 0
        stopped_early = False
        for epoch in range(1, hp.epochs + 1):
            t0 = time.monotonic()
            loss, accuracy = self.run_steps(iterator, steps)
            epoch_train = time.monotonic() - t0
            train_seconds += epoch_train
            val_loss = val_accuracy = None
            improved = False
            if epoch % hp.eval_every == 0 or epoch == hp.epochs:
                labels, logits = self.predict(val_ds)
                val_loss = evaluation.softmax_cross_entropy(labels, logits)
                val_accuracy = float((logits.argmax(axis=1) == labels).mean())
                # First evaluation always counts: even a NaN loss gives a model to export.
                if val_loss < best_loss or best_weights is None:
                    best_loss, best_epoch, improved = val_loss, epoch, True
                    best_weights = [np.array(w) for w in self.model.get_weights()]
            elapsed = time.monotonic() - started
            progress = EpochProgress(
                epoch=epoch,
                total_epochs=hp.epochs,
                loss=loss,
                accuracy=accuracy,
                val_loss=val_loss,
                val_accuracy=val_accuracy,
                images_per_second=steps * hp.batch_size / max(epoch_train, 1e-9),
                eta_seconds=elapsed / epoch * (hp.epochs - epoch),
                best=improved,
            )
            history.append(progress)
            log.info("%s", progress.line())
            if hp.patience and epoch - best_epoch >= hp.patience and epoch < hp.epochs:
                log.info(
                    "early stopping: validation loss has not improved for %d epochs (best %.4f at epoch %d)",
                    epoch - best_epoch, best_loss, best_epoch,
                )
                stopped_early = True
                break
        assert best_weights is not None  # the last epoch is always evaluated
        return TrainResult(
            weights=best_weights,
            epochs_run=epoch,
            best_epoch=best_epoch,
            best_val_loss=best_loss,
            history=history,
            train_seconds=train_seconds,
            images_per_second=steps * hp.batch_size * epoch / max(train_seconds, 1e-9),
            stopped_early=stopped_early,
        )
