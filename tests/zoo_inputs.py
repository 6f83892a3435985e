"""The smallest convenient input of every zoo model (tests/models, tests/train)."""

# (channels, side length, options that keep the model tiny) per registered model.
INPUTS = {
    "vggsnn": (2, 16, dict(input_size=16)),
    "vgg11": (3, 32, {}),
    "vgg16": (3, 32, {}),
    "resnet18": (3, 8, {}),
    "resnet19": (3, 8, {}),
    "resnet20": (3, 8, {}),
    "resnet34": (3, 8, {}),
    "sew_resnet18": (3, 16, {}),
    "sew_resnet34": (3, 16, {}),
    "spiking_resnet34": (3, 16, {}),
    "digits_cnn": (1, 16, {}),
    "cifar_cnn": (3, 8, {}),
    "cifar_fast": (3, 8, {}),
}

# Spiking-only architectures with their own neurons, tested in their method's folder.
SPIKING_ONLY = {"spikedhs", "spikedhs_stereo"}  # tests/search, tests/stereo
