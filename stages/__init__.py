"""Pipeline stages: one module per DVC stage, plus shared config, data, models and tracking code."""
