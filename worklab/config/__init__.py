"""The config's schemas: the dataclasses behind conf/, one module per job, none of them knowing Hydra.

Each dataclass checks its values in `__post_init__` and raises `UserError` naming the
key, so a bad value stops the run before TensorFlow is even imported. Import a name from
the module that defines it; this package re-exports nothing.

- checks.py               the value checks every schema uses (`require`, `inert`, ...)
- reader.py               ReaderConfig, AugmentConfig, DemoConfig
- network.py              NetworkConfig, LrRule, ArchArgs, the keys each kind of network reads
- training.py             OptimizerConfig, LossConfig, RestoreConfig, RestoreRule
- schedules.py            every schedule's schema and the registry SCHEDULES (ScheduleKind, schedule_kind)
- runtime.py              RuntimeConfig
- root.py                 Config: one field per group, the run's own settings, the rules across groups
- architectures.py        the Keras Applications catalogue (no Keras)
- preprocessing_policy.py the input scaling a config's network gets (PREPROCESSING, input_preprocessing)
- hparams.py              the settings as TensorBoard's HParams dashboard takes them

worklab.hydra_edge registers the schemas in Hydra's ConfigStore and turns a composed
config into these plain objects; worklab.run.run_config reads a run folder's config back.
"""
