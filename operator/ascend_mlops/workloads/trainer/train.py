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

from . import evaluation, networks, pipeline, schedule
from .dataset import Split
from .distribute import Cluster
from .errors import STOP
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
    phases: list[str]  # per epoch of history: schedule.HEAD or schedule.FULL
    learning_rates: list[float]  # per epoch of history: the rate of its last step
    train_seconds: float
    images_per_second: float
    stopped_early: bool
    backbone_trained: bool  # False when the best epoch trained only the head (the backbone is the file's)


def smoothed_cross_entropy(labels: tf.Tensor, logits: tf.Tensor, smoothing: float) -> tf.Tensor:
    """Per-example cross-entropy against labels smoothed towards uniform by `smoothing`."""
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    nll = -tf.gather(log_probs, labels, axis=1, batch_dims=1)
    if not smoothing:
        return nll
    return (1.0 - smoothing) * nll - smoothing * tf.reduce_mean(log_probs, axis=-1)


class Trainer:
    def __init__(self, config: TrainConfig, num_classes: int, strategy: tf.distribute.Strategy) -> None:
        self.config = config
        self.hp = config.hparams
        self.strategy = strategy
        self.num_classes = num_classes
        self.fine_tuning = config.weights is not None
        with strategy.scope():
            self.model = networks.build(
                config.algorithm, num_classes, self.hp.image_size, seed=config.seed, eval_crop=self.hp.eval_crop
            )
            if config.weights is not None:
                networks.warm_start(self.model, config.weights)
            self.optimizer = keras.optimizers.SGD(
                learning_rate=self.hp.learning_rate,
                momentum=self.hp.momentum,
                weight_decay=self.hp.weight_decay or None,
            )
            # Decay kernels only: shrinking batch-norm scales/offsets and biases only hurts.
            self.optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
            # Built over every variable while all are trainable: a phase then updates its subset.
            self.optimizer.build(self.model.trainable_variables)
        self.phases = schedule.phases(self.hp, self.fine_tuning)
        self._train_step = self._make_train_step()
        self._predict = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    # -- steps ------------------------------------------------------------
    def _make_train_step(self) -> Callable[[Any], tuple[tf.Tensor, tf.Tensor]]:
        """A step over the variables trainable now (traced anew for each phase)."""
        model, optimizer, strategy = self.model, self.optimizer, self.strategy
        global_batch = self.hp.batch_size
        smoothing = self.hp.label_smoothing
        variables = list(model.trainable_variables)

        def replica_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                per_example = smoothed_cross_entropy(labels, logits, smoothing)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
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

    def enter_phase(self, phase: schedule.Phase) -> None:
        networks.set_backbone_trainable(self.model, phase.trains_backbone)
        self._train_step = self._make_train_step()
        log.info("%s", phase.describe())

    def distribute(self, dataset: tf.data.Dataset) -> Iterator[Any]:
        return iter(self.strategy.experimental_distribute_dataset(dataset))

    def run_steps(
        self, iterator: Iterator[Any], steps: int, phase: schedule.Phase | None = None, first_step: int = 0
    ) -> tuple[float, float]:
        """Train `steps` global batches; return (mean loss, accuracy) over them.

        With a phase, each step's learning rate follows its schedule from `first_step` on.
        """
        loss_sum = correct = 0.0
        STOP.check()
        STOP.deferring = True
        try:
            for i in range(steps):
                if phase is not None:
                    self.optimizer.learning_rate = phase.learning_rate_at(first_step + i, steps)
                loss, hits = self._train_step(next(iterator))
                loss_sum += float(loss)
                correct += float(hits)
                STOP.check()
        finally:
            STOP.deferring = False
        STOP.check()
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
        train_ds = pipeline.training_dataset(
            split.train, hp.image_size, hp.batch_size, self.config.seed, cache,
            crop_scale=hp.crop_scale, color_jitter=hp.color_jitter,
        )
        val_ds = pipeline.evaluation_dataset(split.validation, hp.image_size, hp.batch_size, cache)
        iterator = self.distribute(train_ds)
        steps = max(1, math.ceil(len(split.train) / hp.batch_size))
        log.info(
            "training %s on %d images (%d validation), %d classes, %dx%d, batch %d, %d steps/epoch, up to %d epochs, "
            "recipe %s%s",
            self.config.algorithm, len(split.train), len(split.validation), self.num_classes,
            hp.image_size, hp.image_size, hp.batch_size, steps, hp.epochs, hp.recipe,
            f", fine-tuning {self.config.weights}" if self.fine_tuning else ", from random weights",
        )
        history: list[EpochProgress] = []
        epoch_phases: list[str] = []
        learning_rates: list[float] = []
        best_loss = math.inf
        best_epoch = 0
        best_weights: list[np.ndarray] | None = None
        train_seconds = 0.0
        started = time.monotonic()
        epoch = 0
        stopped_early = False
        for phase in self.phases:
            if phase.index > 1 or not phase.trains_backbone:
                self.enter_phase(phase)
            else:
                log.info("%s", phase.describe())
            last_phase = phase.index == phase.count
            for epoch in range(phase.first_epoch, phase.last_epoch + 1):
                t0 = time.monotonic()
                loss, accuracy = self.run_steps(iterator, steps, phase, (epoch - phase.first_epoch) * steps)
                epoch_train = time.monotonic() - t0
                train_seconds += epoch_train
                val_loss = val_accuracy = None
                improved = False
                if epoch % hp.eval_every == 0 or epoch == hp.epochs or epoch == phase.last_epoch:
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
                rate = float(self.optimizer.learning_rate.numpy())
                history.append(progress)
                epoch_phases.append(phase.name)
                learning_rates.append(rate)
                # The shared progress format, plus this run's phase and learning rate (parse() skips extra fields).
                log.info("%s phase=%s lr=%.4g", progress.line(), phase.label(), rate)
                # Early stopping never cuts the head phase short, and counts the last phase from its start.
                since = epoch - max(best_epoch, phase.first_epoch - 1)
                if last_phase and hp.patience and since >= hp.patience and epoch < hp.epochs:
                    log.info(
                        "early stopping: validation loss has not improved for %d epochs (best %.4f at epoch %d)",
                        since, best_loss, best_epoch,
                    )
                    stopped_early = True
                    break
            if stopped_early:
                break
        assert best_weights is not None  # the last epoch is always evaluated
        return TrainResult(
            weights=best_weights,
            epochs_run=epoch,
            best_epoch=best_epoch,
            best_val_loss=best_loss,
            history=history,
            phases=epoch_phases,
            learning_rates=learning_rates,
            train_seconds=train_seconds,
            images_per_second=steps * hp.batch_size * epoch / max(train_seconds, 1e-9),
            stopped_early=stopped_early,
            # The exported weights are the best epoch's: from the head phase, the backbone is the file's.
            backbone_trained=epoch_phases[best_epoch - 1] == schedule.FULL,
        )
