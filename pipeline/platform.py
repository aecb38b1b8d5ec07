"""Per-component platform settings for cluster runs, applied inside `create_pipeline`.

`ComponentPlatform()` (the default) changes nothing, so the local pipeline is
exactly the factory's plain output. The Kubeflow runner fills it from the config:
container resources per component, and Vertex AI Training for Tuner and Trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


@dataclasses.dataclass(frozen=True)
class ComponentPlatform:
    """What changes per component when the pipeline runs on a cluster.

    Attributes:
      resources: container resource requests by component id (ResourceSpec protos).
      vertex_training: extra `custom_config` entries that make Tuner and Trainer
        run as Vertex AI custom jobs (see kubeflow/scaling.py); None runs them in
        the pipeline's own container.
      parallel_trials: tuner workers running trials at once (Vertex AI Training).
    """

    resources: Mapping[str, ResourceSpec] = dataclasses.field(default_factory=dict)
    vertex_training: Mapping[str, Mapping[str, Any]] | None = None
    parallel_trials: int = 1

    def tuner_class(self) -> type:
        if self.vertex_training is None:
            return tfx.components.Tuner
        return tfx.extensions.google_cloud_ai_platform.Tuner

    def trainer_class(self) -> type:
        if self.vertex_training is None:
            return tfx.components.Trainer
        return tfx.extensions.google_cloud_ai_platform.Trainer

    def tune_args(self) -> tfx.proto.TuneArgs | None:
        if self.parallel_trials <= 1:
            return None
        return tfx.proto.TuneArgs(num_parallel_trials=self.parallel_trials)

    def custom_config(self, shared: Mapping[str, Any], component: str) -> dict[str, Any]:
        """`shared` plus this component's Vertex AI Training entries ("Tuner"/"Trainer")."""
        extra = (self.vertex_training or {}).get(component, {})
        return {**shared, **extra}

    def apply(self, components: Sequence[Any]) -> None:
        """Attaches the resource requests to the named components."""
        known = {c.id for c in components}
        unknown = sorted(set(self.resources) - known)
        if unknown:
            raise ValueError(
                f"resources for components not in the pipeline: {unknown}; it has {sorted(known)}"
            )
        for component in components:
            if component.id in self.resources:
                component.with_platform_config(self.resources[component.id])
