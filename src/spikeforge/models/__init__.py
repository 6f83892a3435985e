"""Model zoo built from an activation factory.

One architecture, many activations::

    from spikeforge import models
    snn = models.create("resnet19", num_classes=10, neuron="lif", timesteps=4)  # [B,3,32,32] -> [T,B,10]
    ann = models.create("resnet19", num_classes=10, neuron="relu")              # [B,3,32,32] -> [B,10]
    snn_mean = models.create("resnet19", num_classes=10, mean_over_time=True)   # [B,3,32,32] -> [B,10] (time average)
    models.list_models()                                                        # registered names

``neuron`` is a registered activation name ("lif", "if", "plif", "relu",
"qcfs" once ``import spikeforge.convert`` registered it) or any callable returning a
fresh module per call; ``neuron_kwargs`` override the defaults
(:data:`~spikeforge.models.activations.SPIKING_DEFAULTS`: TET's LIF).
New models register with :func:`register`, new activations with
:func:`register_activation`. :func:`fold_bn` folds eval-mode batch norm into
the preceding convolution / linear layer.
"""

from . import compact, resnet, sew_resnet, spikedhs, vgg  # noqa: F401  (each registers its models)
from .activations import (
    SPIKING_DEFAULTS,
    ActivationFactory,
    activation_factory,
    list_activations,
    register_activation,
)
from .fold import fold_bn
from .registry import create, list_models, register

__all__ = [
    "create",
    "list_models",
    "register",
    "activation_factory",
    "register_activation",
    "list_activations",
    "ActivationFactory",
    "SPIKING_DEFAULTS",
    "fold_bn",
]
