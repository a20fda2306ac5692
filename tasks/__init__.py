"""The pipeline's stages: ``graph.py`` declares them, ``stage.py`` runs any of them as a Prefect task.

Each ``tasks/<stage>.py`` holds the stage's ``build(cfg, inputs, out)``: one
library call from config and input directories to files in ``out`` (never
DataFrames, tensors or models between stages). Libraries are imported inside
``build``, so a command imports only the stages it runs.
"""
