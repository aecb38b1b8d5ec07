"""`create_pipeline`: the one definition of the pipeline, for every runner.

TFMA 0.52 does not re-export its config protos at the top level (tfma.EvalConfig is
missing), so they are imported from tensorflow_model_analysis.proto.config_pb2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ml_metadata.proto import metadata_store_pb2
from tensorflow_model_analysis.proto import config_pb2 as tfma
from tfx import v1 as tfx

from components.anomaly_gate import AnomalyGate
from components.explanations import Explanations
from components.infra_validation import InfraValidation
from components.model_card import ModelCard
from components.quantization import Quantization
from components.slice_gate import SliceGate
from models import registry
from models.features import FeatureSpec
from pipeline import evaluation, sources, spans
from pipeline.baseline import PreviousBlessedModelStrategy, WarmStartModelStrategy
from pipeline.config import PipelineConfig
from pipeline.platform import ComponentPlatform

PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
TUNER_FN = "pipeline.training.tuner_fn"
RUN_FN = "pipeline.training.run_fn"
SLICE_GATE_ID = "SliceGate"

# TFMA metric classes for the config's metric names.
_CLASSIFICATION_METRICS = {
    "accuracy": "SparseCategoricalAccuracy",
    "precision": "Precision",
    "recall": "Recall",
    "auc": "AUC",
}
_REGRESSION_METRICS = {
    "mse": "MeanSquaredError",
    "mae": "MeanAbsoluteError",
    "rmse": "RootMeanSquaredError",
}


def feature_spec(config: PipelineConfig) -> FeatureSpec:
    """The features and task of a config, as models/ knows them."""
    return FeatureSpec(
        config.numeric_features,
        config.categorical_features,
        config.label,
        config.task,
        image=config.image_features,
        image_shape=config.image_shape,
        text=config.text_features,
        max_tokens=config.max_tokens if config.text_features else 0,
        sequence=config.sequence_features,
        sequence_length=config.sequence_length,
    )


def preprocessing_options(config: PipelineConfig) -> dict[str, Any]:
    """What `preprocessing_fn` needs beyond the features: the text vocabulary's size
    (top_k) and how series are normalised."""
    return {
        "vocabulary_size": config.vocabulary_size,
        "sequence_normalization": config.sequence_normalization,
        "categorical_top_k": config.categorical_vocabulary.top_k,
        "categorical_min_frequency": config.categorical_vocabulary.min_frequency,
    }


def _searchable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else dataclasses.asdict(value)


def search_space(config: PipelineConfig) -> dict[str, Any]:
    """The hyperparameters of the configured model family: ranges and choices for the
    tuner, and fixed values (augmentation) as plain scalars. With a base model, those its
    image encoder fixes (registry.BACKBONE_KEYS) are left out."""
    space = config.tuner.search_space
    augmentation = config.model.augmentation
    # Ranges as dicts, choices as lists: the form models.search_space.hyperparameters reads.
    every = {
        field.name: _searchable(getattr(space, field.name)) for field in dataclasses.fields(space)
    }
    every.update(
        augment_flip=augmentation.flip,
        augment_translate=augmentation.translate,
        augment_zoom=augmentation.zoom,
        # 0: the size from models/encoders.py's rule of thumb.
        categorical_embedding_min_vocabulary=config.model.embeddings.min_vocabulary,
        categorical_embedding_dim=config.model.embeddings.dim or 0,
    )
    family = config.model_family
    fixed = registry.BACKBONE_KEYS[family] if config.model.base_model else ()
    return {key: every[key] for key in registry.SEARCH_KEYS[family] if key not in fixed}


def custom_config(config: PipelineConfig, code_version: str) -> dict[str, Any]:
    """What Transform, Tuner and Trainer receive as `custom_config`.

    `code_version` fingerprints the model code: the functions are referenced by
    import path, so without it TFX's cache would not notice a change in them.
    """
    return {
        "features": feature_spec(config).to_dict(),
        "preprocessing": preprocessing_options(config),
        "model_family": config.model_family,
        "search_space": search_space(config),
        "tuner": {
            "max_trials": config.tuner.max_trials,
            "epochs": config.tuner.epochs,
            "seed": config.tuner.seed,
            "max_train_examples": config.tuner.max_train_examples,
            "objective": config.tuner.objective,
            "objective_direction": config.tuner.objective_direction,
        },
        "training": {
            "epochs": config.training.epochs,
            "batch_size": config.training.batch_size,
            "early_stopping_patience": config.training.early_stopping_patience,
            "cache_max_mb": config.training.cache_max_mb,
        },
        "fine_tune": _fine_tune(config),
        "code_version": code_version,
    }


def _fine_tune(config: PipelineConfig) -> dict[str, Any] | None:
    """Transfer learning for Tuner and Trainer (pipeline/training.py), or None."""
    if config.model.base_model is None:
        return None
    fine_tune = config.model.fine_tune
    return {
        "base_model": config.model.base_model,
        "frozen_epochs": fine_tune.frozen_epochs,
        "learning_rate_factor": fine_tune.learning_rate_factor,
    }


def _threshold(config: PipelineConfig) -> tfma.MetricThreshold:
    evaluation = config.evaluation
    higher_is_better = config.task == "classification"
    bound = (
        tfma.GenericValueThreshold(lower_bound={"value": evaluation.lower_bound})
        if higher_is_better and evaluation.lower_bound is not None
        else tfma.GenericValueThreshold(upper_bound={"value": evaluation.upper_bound})
        if not higher_is_better and evaluation.upper_bound is not None
        else None
    )
    direction = (
        tfma.MetricDirection.HIGHER_IS_BETTER
        if higher_is_better
        else tfma.MetricDirection.LOWER_IS_BETTER
    )
    change = tfma.GenericChangeThreshold(
        direction=direction,
        absolute={
            "value": -evaluation.max_regression if higher_is_better else evaluation.max_regression
        },
    )
    return tfma.MetricThreshold(value_threshold=bound, change_threshold=change)


def eval_config(config: PipelineConfig, label_classes: Sequence[str]) -> tfma.EvalConfig:
    """TFMA config: metrics for the task, overall and per slice, and the blessing
    threshold on the primary one.

    Args:
      config: the pipeline config.
      label_classes: the class names (classification); per-class precision, recall,
        F1 and AUCs are macro-averaged over them.

    A classification also gets the multi-class confusion matrix (a TFMA plot; the top
    score is the prediction), which the run summary reads back with class names, ROC/PR
    and calibration plots (pipeline/evaluation.py) and, with a fairness feature, the
    Fairness Indicators. A regression gets R² and the residual histogram.
    """
    label_xf = FeatureSpec((), (), config.label, config.task).label_xf
    if config.task == "classification":
        prediction_key, metrics_specs = "scores", _classification_specs(config, label_classes)
    else:
        prediction_key, metrics_specs = "outputs", _regression_specs(config)
    model_spec = tfma.ModelSpec(
        signature_name="serving_default",
        label_key=label_xf,
        prediction_key=prediction_key,
        preprocessing_function_names=["transform_features"],
    )
    return tfma.EvalConfig(
        model_specs=[model_spec],
        slicing_specs=evaluation.slicing_specs(config),
        metrics_specs=metrics_specs,
    )


def _classification_specs(
    config: PipelineConfig, label_classes: Sequence[str]
) -> list[tfma.MetricsSpec]:
    threshold = _threshold(config)
    primary = config.evaluation.metric
    class_ids = list(range(len(label_classes)))
    overall = [
        tfma.MetricConfig(
            class_name="SparseCategoricalAccuracy",
            threshold=threshold if primary == "accuracy" else None,
        ),
        tfma.MetricConfig(class_name="ExampleCount"),
        # Log loss of the class scores.
        tfma.MetricConfig(class_name="SparseCategoricalCrossentropy"),
        tfma.MetricConfig(
            class_name="MultiClassConfusionMatrixPlot", config='{"thresholds": [0.0]}'
        ),
    ]
    per_class = [
        tfma.MetricConfig(
            class_name=_CLASSIFICATION_METRICS[name],
            threshold=threshold if primary == name else None,
        )
        for name in ("precision", "recall", "auc")
    ]
    # Reported per class and macro-averaged; not blessing metrics.
    per_class += [
        tfma.MetricConfig(class_name="F1Score"),
        tfma.MetricConfig(class_name="AUCPrecisionRecall"),
    ]
    specs = [
        tfma.MetricsSpec(metrics=overall),
        tfma.MetricsSpec(
            metrics=per_class,
            binarize=tfma.BinarizationOptions(class_ids={"values": class_ids}),
            aggregate=tfma.AggregationOptions(
                macro_average=True, class_weights=dict.fromkeys(class_ids, 1.0)
            ),
        ),
        evaluation.curve_metrics_spec(class_ids),
    ]
    if config.evaluation.fairness.feature:
        specs.append(evaluation.fairness_metrics_spec(config, class_ids))
    return specs


def _regression_specs(config: PipelineConfig) -> list[tfma.MetricsSpec]:
    threshold = _threshold(config)
    primary = config.evaluation.metric
    metrics = [
        tfma.MetricConfig(class_name=cls, threshold=threshold if primary == name else None)
        for name, cls in _REGRESSION_METRICS.items()
    ]
    return [
        tfma.MetricsSpec(
            metrics=[
                *metrics,
                tfma.MetricConfig(class_name="ExampleCount"),
                *evaluation.regression_extras(),
            ]
        )
    ]


def _blessed_models() -> dict[str, tfx.dsl.Channel]:
    """A resolver's inputs for "the last blessed model": models and the SliceGate's blessings."""
    return {
        "model": tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        "model_blessing": tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.ModelBlessing,
            producer_component_id=SLICE_GATE_ID,
            output_key="blessing",
        ),
    }


def _baseline_resolver(candidate: tfx.dsl.Channel, exclude_candidate: bool) -> tfx.dsl.Resolver:
    """The last blessed model, for the Evaluator's change threshold.

    Blessed means by the SliceGate (what the Pusher reads): the Evaluator's own blessing
    of a model that then failed a slice gate must not make it the baseline.
    """
    channels = _blessed_models()
    if exclude_candidate:
        strategy = PreviousBlessedModelStrategy
        channels["candidate"] = candidate
    else:
        strategy = tfx.dsl.experimental.LatestBlessedModelStrategy
    return tfx.dsl.Resolver(strategy_class=strategy, **channels).with_id(
        "latest_blessed_model_resolver"
    )


def _warm_start_resolver(examples: tfx.dsl.Channel, keep_cache: bool) -> tfx.dsl.Resolver:
    """The last blessed model, for the Trainer to warm-start from (TFX's `base_model`).

    Blessed by the SliceGate, as for the baseline. With `keep_cache`, examples a Trainer
    already trained on get the model that Trainer started from, so an unchanged pipeline
    stays cached (pipeline/baseline.py).
    """
    channels = _blessed_models()
    if keep_cache:
        strategy = WarmStartModelStrategy
        channels["examples"] = examples
    else:
        strategy = tfx.dsl.experimental.LatestBlessedModelStrategy
    return tfx.dsl.Resolver(strategy_class=strategy, **channels).with_id(
        "warm_start_model_resolver"
    )


def _quantization(config: PipelineConfig, model, transform, examples) -> Quantization:
    """The int8/TFLite step after the Trainer; its `served_model` goes on to Evaluator, Pusher."""
    quantization = config.quantization
    pruning = quantization.pruning
    return Quantization(
        model=model,
        transform_graph=transform.outputs["transform_graph"],
        transformed_examples=transform.outputs["transformed_examples"],
        examples=examples,
        spec=feature_spec(config),
        method=quantization.method,
        metric=config.evaluation.metric,
        max_metric_drop=quantization.max_metric_drop,
        representative_samples=quantization.representative_samples,
        serve=quantization.serve,
        on_guard_failure=quantization.on_guard_failure,
        pruning_sparsity=pruning.target_sparsity if pruning.enabled else 0.0,
        pruning_epochs=pruning.epochs,
        latency_runs=quantization.latency_runs,
    )


def _slice_gate(config: PipelineConfig, evaluator) -> SliceGate:
    """The slice gates on the Evaluator's per-slice metrics; its blessing is what is pushed."""
    features = evaluation.slice_features(config)
    domains = evaluation.schema_domains(config.schema_file)
    return SliceGate(
        evaluation=evaluator.outputs["evaluation"],
        model_blessing=evaluator.outputs["blessing"],
        slice_features=features,
        expected_values={f: domains[f] for f in features if f in domains},
        gates=config.evaluation.gates,
        fairness=config.evaluation.fairness,
    ).with_id(SLICE_GATE_ID)


def card_config(config: PipelineConfig) -> dict[str, Any]:
    """What the model card takes from the config (the ModelCard component's parameter)."""
    card = config.model_card
    return {
        "model": {
            "name": config.model_name,
            "family": config.model_family,
            "task": config.task,
            "features": list(config.features),
            "label": config.label,
        },
        "considerations": {
            "intended_use": card.intended_use,
            "users": card.users,
            "out_of_scope": card.out_of_scope,
        },
        "min_slice_examples": card.min_slice_examples,
    }


def _explanations(config: PipelineConfig, trainer, transform) -> list[Explanations]:
    """Integrated gradients of the Trainer's model, unless the config turns them off."""
    explanations = config.explanations
    if not explanations.enabled:
        return []
    return [
        Explanations(
            model=trainer.outputs["model"],
            transform_graph=transform.outputs["transform_graph"],
            transformed_examples=transform.outputs["transformed_examples"],
            spec=feature_spec(config),
            examples=explanations.examples,
            steps=explanations.steps,
            heatmaps_per_class=explanations.heatmaps_per_class,
        )
    ]


def _span_window(config: PipelineConfig, example_gen, span_window: bool) -> list:
    """With data.spans (and unless `span_window` is off), the Resolver that gives Transform
    the latest data.spans.window spans any run ingested (pipeline/spans.py)."""
    if not (config.data.spans and span_window):
        return []
    return [spans.window_resolver(example_gen, config.data.spans.window)]


def data_components(
    config: PipelineConfig, data_root: str, span: int | None = None
) -> tuple[Any, Any]:
    """ExampleGen and StatisticsGen: how the pipeline reads the data and describes it.

    The ExampleGen and the statistics options are the data format's
    (pipeline/sources.py). The `schema` command infers from these same components, so a schema it writes agrees with what the
    pipeline validates (an empty CSV field, for instance, is an empty feature in
    ExampleGen's tf.Examples, not an absent one). With data.spans the ExampleGen reads
    span `span` (None: the latest on disk, TFX's own choice).
    """
    source = sources.source_of(config)
    range_config = spans.range_config(span) if span is not None else None
    example_gen = source.example_gen(config, data_root, range_config)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], stats_options=source.stats_options(config)
    )
    return example_gen, statistics_gen


def create_pipeline(
    config: PipelineConfig,
    *,
    data_root: str,
    pipeline_root: str,
    serving_dir: str,
    label_classes: Sequence[str],
    code_version: str,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    beam_pipeline_args: Sequence[str] = (),
    enable_cache: bool = True,
    platform: ComponentPlatform | None = None,
    exclude_candidate_from_baseline: bool = True,
    span: int | None = None,
    span_window: bool = True,
) -> tfx.dsl.Pipeline:
    """Builds the TFX pipeline for one dataset config.

    Args:
      config: the validated pipeline config.
      data_root: directory holding the CSV file(s) that ExampleGen reads.
      pipeline_root: where TFX writes artifacts (local path or gs://).
      serving_dir: `<serving_root>/<model_name>`; Pusher writes versions under it.
      label_classes: the label's classes (classification), for the metrics.
      code_version: a fingerprint of the model code, for correct caching.
      metadata_connection_config: ML Metadata store (None on Kubeflow/Vertex).
      beam_pipeline_args: Beam options for the data components.
      enable_cache: reuse results of unchanged components.
      exclude_candidate_from_baseline: compare with the last blessed model other
        than the candidate (see pipeline/baseline.py). Kubeflow V2 compiles only
        TFX's built-in resolver strategies, so its runner passes False.
      platform: per-component cluster settings (resources, Vertex AI Training);
        None, the local default, changes nothing.
      span: with data.spans, the span this run's ExampleGen reads (the newest; None: the
        latest on disk).
      span_window: with data.spans, Transform reads the latest data.spans.window spans
        any run ingested (a Resolver with spans.SpanWindowStrategy); False: the newest
        span only (Kubeflow V2 compiles only TFX's built-in resolver strategies).

    Returns:
      The pipeline: ExampleGen, StatisticsGen, schema, ExampleValidator, AnomalyGate,
      Transform, Tuner, warm-start resolver (unless training.warm_start is false), Trainer,
      Quantization (unless disabled), latest-blessed-model resolver, Evaluator, SliceGate,
      InfraValidation, Explanations (unless disabled), ModelCard, Pusher.
    """
    example_gen, statistics_gen = data_components(config, data_root, span)
    if config.schema_file:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_file)
    else:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False
        )
    schema = schema_gen.outputs["schema"]
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema
    )
    anomaly_gate = AnomalyGate(anomalies=example_validator.outputs["anomalies"])

    shared_config = custom_config(config, code_version)
    window = _span_window(config, example_gen, span_window)
    transform = tfx.components.Transform(
        examples=window[0].outputs["examples"] if window else example_gen.outputs["examples"],
        schema=schema,
        preprocessing_fn=PREPROCESSING_FN,
        custom_config=shared_config,
    )
    transform.add_upstream_node(anomaly_gate)
    train_args = tfx.proto.TrainArgs(splits=["train"])
    eval_args = tfx.proto.EvalArgs(splits=["eval"])
    platform = platform or ComponentPlatform()
    warm_start = []
    trainer_inputs = {}
    if config.training.warm_start:
        warm_start = [
            _warm_start_resolver(
                transform.outputs["transformed_examples"], exclude_candidate_from_baseline
            )
        ]
        trainer_inputs["base_model"] = warm_start[0].outputs["model"]
    tuner = platform.tuner_class()(
        tuner_fn=TUNER_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        train_args=train_args,
        eval_args=eval_args,
        tune_args=platform.tune_args(),
        custom_config=platform.custom_config(shared_config, "Tuner"),
    )
    trainer = platform.trainer_class()(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema,
        hyperparameters=tuner.outputs["best_hyperparameters"],
        train_args=train_args,
        eval_args=eval_args,
        # The switch goes to the Trainer alone: flipping it leaves Transform and Tuner cached.
        custom_config=platform.custom_config(
            {**shared_config, "warm_start": config.training.warm_start}, "Trainer"
        ),
        **trainer_inputs,
    )
    served_model = trainer.outputs["model"]
    quantization = []
    if config.quantization.enabled:
        examples = example_gen.outputs["examples"]
        quantization = [_quantization(config, served_model, transform, examples)]
        served_model = quantization[0].outputs["served_model"]
    baseline = _baseline_resolver(served_model, exclude_candidate_from_baseline)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        example_splits=["eval"],
        model=served_model,
        baseline_model=baseline.outputs["model"],
        eval_config=eval_config(config, label_classes),
    )
    slice_gate = _slice_gate(config, evaluator)
    # The warmed-up copy of the model that passed infra validation is what gets pushed.
    infra_validation = InfraValidation(
        model=served_model, examples=example_gen.outputs["examples"], model_name=config.model_name
    )
    explanations = _explanations(config, trainer, transform)
    # The card goes inside the model that is pushed: ModelCard copies the warmed-up model
    # with assets.extra/model_card.md into the blessing the Pusher takes.
    model_card = ModelCard(
        infra_blessing=infra_validation.outputs["blessing"],
        evaluation=evaluator.outputs["evaluation"],
        model_blessing=slice_gate.outputs["blessing"],
        model_run=trainer.outputs["model_run"],
        hyperparameters=tuner.outputs["best_hyperparameters"],
        statistics=statistics_gen.outputs["statistics"],
        card_config=card_config(config),
        explanations=explanations[0].outputs["explanations"] if explanations else None,
        quantization_report=quantization[0].outputs["report"] if quantization else None,
    )
    pusher = tfx.components.Pusher(
        model_blessing=slice_gate.outputs["blessing"],
        infra_blessing=model_card.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)
        ),
    )
    result = tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            anomaly_gate,
            *window,
            transform,
            tuner,
            *warm_start,
            trainer,
            *quantization,
            baseline,
            evaluator,
            slice_gate,
            infra_validation,
            *explanations,
            model_card,
            pusher,
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )
    platform.apply(result.components)
    return result
