"""API group, kinds, condition types, reasons and phases."""

from __future__ import annotations

from typing import Final

GROUP: Final = "ascend.mlops.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "ascend-mlops"

# kind -> (plural, singular, short names)
TRAINING_JOB: Final = "TrainingJob"
MODEL_CONVERSION: Final = "ModelConversion"
INFERENCE_SERVICE: Final = "InferenceService"
BATCH_PREDICTION: Final = "BatchPrediction"

PLURALS: Final[dict[str, str]] = {
    TRAINING_JOB: "trainingjobs",
    MODEL_CONVERSION: "modelconversions",
    INFERENCE_SERVICE: "inferenceservices",
    BATCH_PREDICTION: "batchpredictions",
}
SHORT_NAMES: Final[dict[str, list[str]]] = {
    # Chosen not to collide with KServe (isvc) or Kubeflow (tfjob, ptjob, ...).
    TRAINING_JOB: ["amtj"],
    MODEL_CONVERSION: ["ammc"],
    INFERENCE_SERVICE: ["amis"],
    BATCH_PREDICTION: ["ambp"],
}

# Labels and annotations put on every child object.
LABEL_PREFIX: Final = GROUP
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_OWNER_KIND: Final = f"{GROUP}/owner-kind"
LABEL_OWNER_NAME: Final = f"{GROUP}/owner-name"
LABEL_REPLICA_INDEX: Final = f"{GROUP}/replica-index"
LABEL_ATTEMPT: Final = f"{GROUP}/attempt"
ANNOTATION_MODEL_DIGEST: Final = f"{GROUP}/model"
# InferenceService revisions: pods of the stable and the canary Deployment differ in their component label.
COMPONENT_PREDICTOR: Final = "predictor"
COMPONENT_CANARY: Final = "predictor-canary"
ANNOTATION_REVISION: Final = f"{GROUP}/revision"  # "stable" | "canary" on the revision's Deployment, pods, Service
REVISION_STABLE: Final = "stable"
REVISION_CANARY: Final = "canary"
# The sandbox's kubelet remaps container ports to free loopback ports and says so on
# the pod (JSON {"<containerPort>": <local port>}); its proxy says the same on a
# Service ({"<service port>": <local port>}) and gives Services and HTTPRoutes a URL.
ANNOTATION_SANDBOX_PORTS: Final = f"{GROUP}/sandbox-ports"
ANNOTATION_SANDBOX_URL: Final = f"{GROUP}/sandbox-url"
# The Gateway API (gateway.networking.k8s.io), for exact canary weights.
GATEWAY_API_VERSION: Final = "gateway.networking.k8s.io/v1"
HTTPROUTES: Final = "httproutes"
# spec.exposure: an Ingress, or the HTTPRoute above with the exposure's host.
INGRESS_API_VERSION: Final = "networking.k8s.io/v1"
INGRESSES: Final = "ingresses"
# spec.autoscaling: a HorizontalPodAutoscaler, or a KEDA ScaledObject where KEDA is installed.
HPA_API_VERSION: Final = "autoscaling/v2"
HPAS: Final = "horizontalpodautoscalers"
KEDA_API_VERSION: Final = "keda.sh/v1alpha1"
SCALEDOBJECTS: Final = "scaledobjects"
KIND_HPA: Final = "HorizontalPodAutoscaler"
KIND_SCALEDOBJECT: Final = "ScaledObject"
PRODUCT: Final = "ascend-mlops"


class Phase:
    """`status.phase`: a one-word summary for printer columns. Conditions are the API."""

    PENDING: Final = "Pending"
    WAITING: Final = "Waiting"
    RUNNING: Final = "Running"
    SUCCEEDED: Final = "Succeeded"
    FAILED: Final = "Failed"
    READY: Final = "Ready"
    NOT_READY: Final = "NotReady"
    INVALID: Final = "Invalid"


class ConditionType:
    """Condition types (metav1.Condition.type)."""

    # Summary conditions.
    SUCCEEDED: Final = "Succeeded"  # TrainingJob, ModelConversion, BatchPrediction (bounded work)
    READY: Final = "Ready"  # InferenceService (long-running)
    # Detail conditions.
    VALID: Final = "Valid"  # spec passed semantic validation
    CREATED: Final = "Created"  # children created
    RUNNING: Final = "Running"
    RESTARTING: Final = "Restarting"
    SOURCE_READY: Final = "SourceReady"  # referenced TrainingJob / ModelConversion done (or model resolved)
    MODEL_READY: Final = "ModelReady"
    PREDICTOR_READY: Final = "PredictorReady"  # as in KServe
    # InferenceService canary (spec.canary)
    CANARY_READY: Final = "CanaryReady"
    CANARY_PROMOTED: Final = "CanaryPromoted"
    CANARY_ROLLED_BACK: Final = "CanaryRolledBack"
    # InferenceService spec.autoscaling: the HPA / ScaledObject and whether it can scale
    AUTOSCALING: Final = "Autoscaling"
    # kstatus abnormal-true conditions.
    RECONCILING: Final = "Reconciling"
    STALLED: Final = "Stalled"


class Reason:
    """Condition reasons (CamelCase, never empty). Documented in README."""

    # Generic
    CREATED: Final = "Created"
    SPEC_VALID: Final = "SpecValid"
    INVALID_SPEC: Final = "InvalidSpec"
    RECONCILED: Final = "Reconciled"
    RECONCILE_ERROR: Final = "ReconcileError"
    # Training / conversion lifecycle
    PENDING: Final = "Pending"
    RUNNING: Final = "Running"
    SUCCEEDED: Final = "Succeeded"
    FAILED: Final = "Failed"
    BACKOFF_LIMIT_EXCEEDED: Final = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
    PERMANENT_ERROR: Final = "PermanentError"
    POD_RESTARTED: Final = "PodRestarted"
    POD_MISSING: Final = "PodMissing"
    # A scheduled pod not running ASCEND_MLOPS_POD_START_TIMEOUT seconds later (any kind's pods)
    POD_START_TIMEOUT: Final = "PodStartTimeout"
    # References
    WAITING_FOR_TRAINING_JOB: Final = "WaitingForTrainingJob"
    WAITING_FOR_CONVERSION: Final = "WaitingForConversion"
    REFERENCE_NOT_FOUND: Final = "ReferenceNotFound"
    REFERENCE_FAILED: Final = "ReferenceFailed"
    SOURCE_READY: Final = "SourceReady"
    MODEL_RESOLVED: Final = "ModelResolved"
    # Conversion
    CONVERSION_FAILED: Final = "ConversionFailed"
    # Inference
    DEPLOYMENT_PROGRESSING: Final = "DeploymentProgressing"
    MINIMUM_REPLICAS_AVAILABLE: Final = "MinimumReplicasAvailable"
    MINIMUM_REPLICAS_UNAVAILABLE: Final = "MinimumReplicasUnavailable"
    CRASH_LOOP: Final = "CrashLoopBackOff"
    MODEL_LOAD_FAILED: Final = "ModelLoadFailed"
    UNSCHEDULABLE: Final = "Unschedulable"
    IMAGE_PULL_FAILED: Final = "ImagePullFailed"
    # Canary: why it advanced, was promoted or rolled back (a rollback's reason may also be a pod reason above)
    CANARY_PROGRESSING: Final = "CanaryProgressing"
    STEP_PASSED: Final = "StepPassed"
    ANALYSIS_PASSED: Final = "AnalysisPassed"
    ANALYSIS_FAILED: Final = "AnalysisFailed"
    PROMOTING: Final = "Promoting"
    PROMOTED: Final = "Promoted"
    PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"
    # Object storage: the Secret named by spec.storage.secretName (or the default) or a required key is missing
    STORAGE_SECRET_MISSING: Final = "StorageSecretMissing"
    # spec.auth: the token Secret does not exist (or may not be looked at); no pod could mount it
    AUTH_SECRET_MISSING: Final = "AuthSecretMissing"
    # spec.autoscaling (the Autoscaling condition)
    AUTOSCALER_PENDING: Final = "AutoscalerPending"  # created; its controller has not reported yet
    AUTOSCALER_READY: Final = "AutoscalerReady"  # it reads its metric and can scale
    AUTOSCALER_NOT_READY: Final = "AutoscalerNotReady"  # it cannot scale (no metric); its own message says why
    MAX_REPLICAS_ABOVE_CAPACITY: Final = "MaxReplicasAboveCapacity"  # maxReplicas needs more devices than the nodes have
