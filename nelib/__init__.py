"""nelib: a tested replication of Neuroplastic Expansion (Liu et al., ICLR 2025)."""

import os

# Headless MuJoCo rendering, set in this one place: EGL through Mesa's software renderer works on
# machines without a display or GPU. Must happen before dm_control / mujoco are imported.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `import nelib` stays light (no torch/gymnasium) for the presets check and MUJOCO_GL set-up.
    if name == "run":
        from nelib.runner.train import run

        return run
    if name == "make_config":
        from nelib.runner.config import make_config

        return make_config
    raise AttributeError(f"module 'nelib' has no attribute {name!r}")
