"""Pipeline stages: one module per DVC stage, plus shared config, data, models and tracking code.

Importing the package pins the CPU math kernels before any stage loads numpy or torch (stages/core/kernels.py)."""
from stages.core import kernels

kernels.pin()
