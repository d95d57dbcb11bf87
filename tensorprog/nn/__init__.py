"""Neural networks built on the public DSL: parametrizations, NNGP/NTK kernels, MLP training,
and the training compiler of any model (``nn.Model``, ``nn.train``)."""

from .parametrization import (
    ABC,
    MF,
    NTK,
    SP,
    Classification,
    LayerScaling,
    abc,
    muP,
    scalings,
)

__all__ = [
    "ABC",
    "Classification",
    "LayerScaling",
    "abc",
    "classify",
    "muP",
    "SP",
    "NTK",
    "MF",
    "scalings",
]

from .mlp import MLP  # noqa: E402
from .training import (  # noqa: E402
    Exponents,
    TrainingLimit,
    TrainingRun,
    TrainingSimulation,
    train_sgd,
)

__all__ += ["MLP", "train_sgd", "TrainingRun", "TrainingLimit", "TrainingSimulation", "Exponents"]

from .kernels import KernelResult, kernel_program, kernels  # noqa: E402  (the function shadows the module)

__all__ += ["kernels", "kernel_program", "KernelResult"]

from .norms import layernorm, rmsnorm  # noqa: E402

__all__ += ["layernorm", "rmsnorm"]

from .parametrization import (  # noqa: E402
    ClassRule,
    ParamClass,
    ParamExponents,
    PerClass,
    PerParameter,
    Scaling,
    abcd,
)

__all__ += [
    "ParamClass",
    "ClassRule",
    "Scaling",
    "PerClass",
    "PerParameter",
    "abcd",
    "ParamExponents",
]

from .classification import classify  # noqa: E402  (an MLP ABC, or any model)
from .model import Model, ParamSpec  # noqa: E402
from .operator import OperatorKernel  # noqa: E402
from .optim import SGD, Adam, Entrywise, Optimizer, SignSGD  # noqa: E402
from .train import (  # noqa: E402
    TrainLimit,
    TrainRun,
    TrainSimulation,
    operator_kernel,  # noqa: E402  (TP4b's K_Q of the operator regime)
    train,
)

__all__ += [
    "Model",
    "ParamSpec",
    "SGD",
    "Adam",
    "SignSGD",
    "Entrywise",
    "Optimizer",
    "train",
    "TrainRun",
    "TrainLimit",
    "TrainSimulation",
    "operator_kernel",
    "OperatorKernel",
]

# neural-tangents users' vocabulary: stax layer combinators and kernel-regime predictions
from . import predict, stax  # noqa: E402

__all__ += ["stax", "predict"]

# depth: residual networks, depthwise parametrizations, Depth-μP [TP6]
from .depth import (  # noqa: E402
    DepthClassification,
    DepthParametrization,
    GradientDiversity,
    classify_depth,
    depth_muP,
    depth_ode,
    depth_standard,
    gradient_diversity,
    resnet,
)

__all__ += [
    "resnet",
    "depth_muP",
    "depth_ode",
    "depth_standard",
    "DepthParametrization",
    "classify_depth",
    "DepthClassification",
    "gradient_diversity",
    "GradientDiversity",
]

from .coordcheck import CoordCheck, LRSweep, coord_check, lr_sweep  # noqa: E402

__all__ += ["coord_check", "CoordCheck", "lr_sweep", "LRSweep"]
