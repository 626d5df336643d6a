"""The inner training step: `Trainer.train(num_steps)` runs compiled steps and returns scalars.

The Trainer owns no policy: schedules decide how many steps, when to save and when to
change the learning rate (a variable, so a change never retraces). lr_mult rules act
here: each distinct multiplier gets its own Keras optimizer whose rate is `lr * mult`
(exact for every optimizer, Adam included), and variables with multiplier 0 are left
out of the gradient altogether, so they stay bit-identical and cost no backward work.
A non-finite loss or gradient skips its update and is reported, and the batch-norm
statistics the forward pass already moved are put back, so every variable keeps its last
good value. Under float16 (worklab.train.loss_scale) a gradient that overflows while the
loss is finite skips the step the same way and halves the loss scale instead (reported
only once the scale is down to 1, where halving can no longer help).
The gradient comes from worklab.train.losses.Objective (label smoothing, class weights)
and may be clipped to a global norm over all groups together; the loss reported is the
plain cross-entropy, comparable to the test loss. With mixup or cutmix
(worklab.train.mixing) each batch is mixed before the compiled step (Beta draws do not
compile with XLA), seeded by the stream position the `examples` variable holds at the
step's start; the objective, the reported loss and the accuracy are then taken against
the mixed target: `weights` of each example's label and the rest of its partner's. With
network.ema, the weight average (worklab.train.averaging) follows every applied step.

Under a strategy of several replicas (worklab.distribute) each replica takes its slice of
the global batch; the losses and gradients are summed across replicas in replica
context, and the finite-loss decision, the update and the average are made once, in
cross-replica context, with the same result on every replica.
"""
from __future__ import annotations

import re
import time
from typing import Callable, Dict, List, Optional, Tuple

import keras
import tensorflow as tf

from worklab.config.training import OptimizerConfig
from worklab.errors import UserError
from worklab.model.batchnorm import Momentum, batch_norm_layers, training_variables
from worklab.model.rules import Multipliers
from worklab.train.averaging import WeightAverage
from worklab.train.loss_scale import LossScale
from worklab.train.losses import Objective
from worklab.train.mixing import Mixing, against_target

Scalars = Dict[str, float]
# A step's sums over the replicas, in this order: the reported and the minimised loss (each the
# batch mean), the correct and all examples, then the all-reduced gradients' global norm.
REPORTED, MINIMISED, CORRECT, COUNT, NORM = range(5)


def make_optimizer(cfg: OptimizerConfig, learning_rate: Callable[[], tf.Tensor]) -> keras.optimizers.Optimizer:
    """The Keras optimizer of one multiplier group; adamw is Adam, its decoupled decay is OptimizerGroups'."""
    if cfg.name in ("adam", "adamw"):
        return keras.optimizers.Adam(learning_rate, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon)
    momentum = cfg.momentum if cfg.name == "momentum" else 0.0
    return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=cfg.nesterov and momentum > 0)


class OptimizerGroups:
    """One optimizer per distinct learning-rate multiplier, over the variables that train.

    Decoupled weight decay (optimizer.weight_decay, as in AdamW and SGDW) is applied here,
    before each group's update as Keras and PyTorch do: w -= lr * mult * weight_decay *
    decay_mult * w, so it follows the learning-rate schedule and stays out of the
    gradient, the adaptive moments and gradient clipping. Keras' own `weight_decay`
    argument has no per-variable multiplier, hence this.
    """

    def __init__(self, cfg: OptimizerConfig, model: keras.Model, plan: Dict[str, Multipliers],
                 lr: tf.Variable):
        self.groups = []  # (optimizer, variables, mult)
        self.plan = plan
        self.include = re.compile(cfg.decay_include)
        self.exclude = re.compile(cfg.decay_exclude) if cfg.decay_exclude else None
        self.lr = lr
        training = training_variables(model)
        for mult in sorted({plan[v.path].lr for v in training} - {0.0}):
            variables = [v for v in training if plan[v.path].lr == mult]
            optimizer = make_optimizer(cfg, lambda mult=mult: lr * mult)
            optimizer.build(variables)
            self.groups.append((optimizer, variables, mult))
        self.variables = [v for _, vs, _ in self.groups for v in vs]
        self._decoupled = [self.decayed(cfg.weight_decay, variables) for _, variables, _ in self.groups]
        if cfg.weight_decay and not any(self._decoupled):
            raise UserError(f"optimizer.weight_decay={cfg.weight_decay}: no trained variable matches "
                            f"optimizer.decay_include={cfg.decay_include!r}"
                            f"{f' less optimizer.decay_exclude={cfg.decay_exclude!r}' if self.exclude else ''}. "
                            f"Trained variables look like {', '.join(v.path for v in self.variables[:3])}.")

    def decayed(self, rate: float, variables: Optional[List[tf.Variable]] = None) -> List[Tuple[tf.Variable, float]]:
        """The variables that decay at `rate` (of `variables`, default every trained one), each with rate * decay_mult.

        A variable decays when its path matches optimizer.decay_include and not
        optimizer.decay_exclude, and its decay_mult is not 0.
        """
        chosen = [(v, rate * self.plan[v.path].decay) for v in (self.variables if variables is None else variables)
                  if self.include.search(v.path) and not (self.exclude and self.exclude.search(v.path))]
        return [(v, r) for v, r in chosen if r > 0]

    def apply(self, gradients: List[tf.Tensor], strategy: tf.distribute.Strategy) -> None:
        """Update every group from `gradients` (all-reduced; per replica under a strategy of several).

        Runs in cross-replica context, where the Trainer decides whether a step applies at all.
        Keras' own `optimizer.apply` cannot be called there: under a strategy it all-reduces
        and then needs a replica context to merge from, and in replica context it cannot sit
        inside the `tf.cond` of that decision (see Trainer). So each group's variables are
        updated as Keras' TensorFlow optimizer does it inside its merge, through the strategy's
        `extended.update` (one update per device, each with its own replica's gradient) and
        the optimizer's `update_step`, and its iteration count follows.
        """
        start = 0
        for (optimizer, variables, mult), decoupled in zip(self.groups, self._decoupled):
            for variable, rate in decoupled:
                variable.assign_sub(self.lr * (mult * rate) * variable)
            update = _update_step(optimizer, optimizer.learning_rate)
            for gradient, variable in zip(gradients[start:start + len(variables)], variables):
                strategy.extended.update(variable.value, update, args=(gradient,), group=False)
            optimizer.iterations.assign_add(1)
            start += len(variables)

    def state(self) -> Dict[str, Dict[str, tf.Variable]]:
        """The optimizers' own variables (iteration, slots), keyed for the checkpoint.

        Keys drop the optimizer's name, which Keras makes unique per process (sgd, sgd_1, ...),
        keeping what names the slot: e.g. `group0/stage1_block1_conv1_kernel_momentum`.
        """
        return {f"group{i}": {v.path.removeprefix(f"{opt.name}/"): v for v in opt.variables}
                for i, (opt, _, _) in enumerate(self.groups)}


def _update_step(optimizer: keras.optimizers.Optimizer, learning_rate: tf.Tensor):
    """(variable, gradient) -> the optimizer's update of one variable at `learning_rate`."""
    return lambda variable, gradient: optimizer.update_step(gradient, variable, learning_rate)


class Trainer:
    """Runs training steps on an endless dataset and reports their mean loss, accuracy and speed."""

    def __init__(self, model: keras.Model, optimizers: OptimizerGroups,
                 dataset: tf.data.Dataset | tf.distribute.DistributedDataset,
                 step: tf.Variable, examples: tf.Variable, lr: tf.Variable, weight_decay: float,
                 strategy: tf.distribute.Strategy, xla: bool = False,
                 bn_momentum: Optional[Momentum] = None, objective: Optional[Objective] = None,
                 clip_norm: Optional[float] = None, mixing: Optional[Mixing] = None,
                 average: Optional[WeightAverage] = None, loss_scale: Optional[LossScale] = None):
        """`objective` defaults to the plain cross-entropy; `mixing` None trains on the batches as they come;
        `loss_scale` is float16's (runtime.precision=mixed_float16). `dataset` gives global batches, or is
        already distributed (one input pipeline per worker, each replica's batch)."""
        self.model = model
        self.optimizers = optimizers
        self.step = step
        self.examples = examples
        self.bn_momentum = bn_momentum
        self.lr = lr
        self.strategy = strategy
        self.objective = objective or Objective()
        self.clip_norm = clip_norm
        self.mixing = mixing
        self.average = average  # network.ema: updated after every applied step
        self.loss_scale = loss_scale
        self._decayed = optimizers.decayed(weight_decay)  # coupled: L2 in the loss
        self._statistics = [v for layer in batch_norm_layers(model) for v in (layer.moving_mean, layer.moving_variance)]
        if isinstance(dataset, tf.data.Dataset):  # the global batches, split across the replicas here
            dataset = strategy.experimental_distribute_dataset(dataset)
        self._iterator = iter(dataset)
        with strategy.scope():
            self._sums = tf.Variable(tf.zeros(3), trainable=False, name="train_sums")  # loss, correct, count
            self.bad_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="bad_step")
        # With several replicas the forward pass all-reduces (synchronized batch norm), which
        # TensorFlow cannot do inside a tf.function nested in the step: the replica step is
        # then traced into the step itself, and runtime.xla is refused (worklab.distribute).
        several = strategy.num_replicas_in_sync > 1
        self._replica_step = self._replica_step_fn if several else tf.function(self._replica_step_fn,
                                                                              jit_compile=xla)
        self._step = tf.function(self._step_fn)

    def train(self, num_steps: int, on_step: Optional[Callable[[int], bool]] = None) -> Scalars:
        """Run up to `num_steps` steps; `on_step(i)` returning True stops early (e.g. on Ctrl-C).

        Returns the mean data loss (the plain cross-entropy without weight decay, comparable
        to the test loss; against the mixed target under mixing) and accuracy over the steps
        run, the learning rate, images per second, the number of steps run and the global
        step after them.
        """
        self._sums.assign(tf.zeros(3))
        start = time.perf_counter()
        done = 0
        while done < num_steps:
            self._step(self._iterator)
            done += 1
            if on_step and on_step(done):
                break
        loss, correct, count = self._sums.numpy()  # waits for the last step
        seconds = time.perf_counter() - start
        return {"loss": float(loss / max(done, 1)), "accuracy": float(correct / max(count, 1)),
                "lr": float(self.lr.numpy()), "images_per_second": float(count / max(seconds, 1e-9)),
                "steps": done, "step": int(self.step.numpy())}

    def _step_fn(self, iterator) -> None:
        """One step in cross-replica context: every replica's gradient, all-reduced, then one decision.

        Whether the step applies (a finite loss and gradient) is decided here, once for all
        replicas, in a `tf.cond` outside replica context: a cond around a replica's update would
        hold the merge_call that the update's all-reduce needs, which TensorFlow refuses, and
        keras-team/keras#23085 reports Keras 3.14/3.15 with TensorFlow 2.21 failing on a stateful
        optimizer's update in such a cond ("You must feed a value for placeholder tensor 'cond/...'").
        """
        images, labels = next(iterator)
        if self.bn_momentum:
            self.bn_momentum.follow(self.step)
        batch = (images, labels)
        if self.mixing:
            batch = self.strategy.run(self._mix, args=batch)
        # Read before the forward pass moves them (ops on one variable run in program order).
        statistics = [tf.identity(v.value) for v in self._statistics]
        sums, gradients = self.strategy.run(self._all_reduced_step, args=batch)
        sums = self.strategy.experimental_local_results(sums)[0]  # all-reduced: the same on every replica
        finite_loss = tf.math.is_finite(sums[MINIMISED])
        applies = finite_loss & tf.math.is_finite(sums[NORM])  # and every gradient
        tf.cond(applies, lambda: self._apply(gradients), lambda: self._skip(statistics, finite_loss))
        if self.loss_scale:
            self.loss_scale.update(applies)
        self._sums.assign_add(tf.gather(sums, [REPORTED, CORRECT, COUNT]))
        self.step.assign_add(1)
        self.examples.assign_add(tf.cast(sums[COUNT], tf.int64))

    def _all_reduced_step(self, *batch: tf.Tensor):
        """In replica context: this replica's step, then the sums and gradients of all replicas, the sums
        followed by the gradients' global norm, and the gradients clipped to one global norm
        (optimizer.clip_norm) over every multiplier group."""
        sums, gradients = self._replica_step(*batch)
        sums, gradients = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                                         (sums, gradients))
        sums = tf.concat([sums, [tf.linalg.global_norm(gradients)]], 0)
        if self.clip_norm:
            gradients, _ = tf.clip_by_global_norm(gradients, self.clip_norm)
        return sums, gradients

    def _mix(self, images: tf.Tensor, labels: tf.Tensor):
        """This replica's share of the batch mixed, with the draws of the global batch, which starts after the
        examples of the steps before."""
        return self.mixing(images, labels, self.examples.read_value())

    def _replica_step_fn(self, images: tf.Tensor, labels: tf.Tensor, *mixed: tf.Tensor):
        """This replica's share of the step: (reported loss, minimised loss, correct, count) and the gradients.

        The target is `labels`, or with `mixed` = (partners, weights) `weights` of labels and
        the rest of partners. Losses are this replica's share of the global batch mean
        (tf.nn.compute_average_loss), so the sums over replicas are the batch's means.
        """
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(images, training=True), tf.float32)

            def losses(target):  # the plain cross-entropy (reported) and the objective (minimised)
                cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(target, logits)
                return cross_entropy, self.objective(target, logits, cross_entropy)

            reported, minimised = against_target(losses, labels, *mixed)
            data_loss = tf.nn.compute_average_loss(reported)
            loss = tf.nn.compute_average_loss(minimised) + tf.nn.scale_regularization_loss(self._decay())
            scaled = loss * self.loss_scale.scale if self.loss_scale else loss
        gradients = tape.gradient(scaled, self.optimizers.variables)
        if self.loss_scale:
            gradients = [g / self.loss_scale.scale for g in gradients]
        predicted = tf.argmax(logits, -1, output_type=tf.int32)
        correct = tf.reduce_sum(against_target(lambda target: tf.cast(tf.equal(predicted, target), tf.float32),
                                               labels, *mixed))
        count = tf.cast(tf.size(labels), tf.float32)
        return tf.stack([data_loss, loss, correct, count]), gradients

    def _decay(self) -> tf.Tensor:
        """Half the L2 norm times the decay, so the gradient is `decay * w` as in the seed."""
        terms = [0.5 * rate * tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v, rate in self._decayed]
        return tf.add_n(terms) if terms else tf.constant(0.0)

    def _apply(self, gradients) -> tf.Tensor:
        self.optimizers.apply(gradients, self.strategy)
        if self.average:
            self.average.update(self.step)
        return tf.constant(True)

    def _skip(self, statistics: List[tf.Tensor], finite_loss: tf.Tensor) -> tf.Tensor:
        """Put the batch-norm statistics back; report the step as bad unless it is a float16 overflow
        (a finite loss under loss scaling) that halving the scale can still handle: at a scale of 1
        the gradient itself is too large for float16, and every later step would be skipped too."""
        for variable, value in zip(self._statistics, statistics):
            variable.assign(value)
        bad = tf.constant(True)
        if self.loss_scale:
            bad = tf.logical_not(finite_loss) | (self.loss_scale.scale <= 1.0)
        self.bad_step.assign(tf.where(bad & (self.bad_step < 0), self.step + 1, self.bad_step))
        return tf.constant(False)
