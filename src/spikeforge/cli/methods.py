"""Every method room, imported for what it registers, so that a command runs any recipe: ``convert``
registers the ``qcfs`` activation, ``search`` the DGS training callback and the classification supernet,
``stereo`` the stereo task and supernet (a Python user imports the rooms their recipe needs)."""

from .. import convert, search, stereo  # noqa: F401
