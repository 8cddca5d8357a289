"""System packages that headless MuJoCo rendering needs, checked (and on Debian as root, installed) here.

``python -m scripts.system`` exits non-zero with one line saying what to install when they are missing.
``make`` runs it during set-up, so a fresh machine (CI included) gets the same packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# MUJOCO_GL=egl (set in nelib/__init__.py) renders through Mesa's EGL: the GL dispatcher, Mesa's EGL
# vendor library, and the software (llvmpipe) DRI driver for machines without a GPU.
DEBIAN_PACKAGES = ("libegl1", "libegl-mesa0", "libgl1-mesa-dri")


def missing() -> list[str]:
    """Names of the packages (or, off Debian, libraries) that rendering needs and that are absent."""
    if shutil.which("dpkg-query"):
        missing = []
        for pkg in DEBIAN_PACKAGES:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
            if out.returncode != 0 or not out.stdout.endswith(" installed"):
                missing.append(pkg)
        return missing
    # Other distributions name the packages differently; Mesa's EGL library is what matters.
    libs = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    return [] if "libEGL_mesa.so" in libs else ["Mesa EGL (libEGL_mesa.so.0)"]


def ensure() -> None:
    """Install what is missing with apt-get when we are root on Debian; otherwise exit with one line."""
    if not sys.platform.startswith("linux") or os.environ.get("MUJOCO_GL", "egl") != "egl":
        return  # macOS / other GL back-ends: nothing we can check here
    todo = missing()
    if not todo:
        return
    if os.geteuid() == 0 and shutil.which("apt-get") and shutil.which("dpkg-query"):
        print(f"scripts.system: installing {' '.join(todo)} for headless MuJoCo rendering", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *todo],
                       check=True, env=env)
        if not missing():
            return
    sys.exit(f"error: headless MuJoCo rendering (MUJOCO_GL=egl) needs {', '.join(todo)}; "
             f"on Debian/Ubuntu: sudo apt-get install {' '.join(DEBIAN_PACKAGES)}")


if __name__ == "__main__":
    ensure()
