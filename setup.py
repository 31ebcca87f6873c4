"""Package list for setuptools; everything else is in pyproject.toml.

pyproject.toml cannot combine automatic package discovery with extra
packages mapped from other folders, so the list is built here: every
``medsat_sr`` package found on disk plus the two data packages that
``[tool.setuptools.package-dir]`` maps from the top-level ``domains/`` and
``configs/`` folders.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["medsat_sr", "medsat_sr.*"])
    + ["medsat_sr._data.domains", "medsat_sr._data.configs"],
)
