"""Prefect tasks: one per stage, each a thin wrapper of one library call.

A task takes the config and its input stage directories and returns its
output directory (a string path) — never DataFrames, tensors or models.
"""
from tasks.ingest import ingest_task
from tasks.extract import extract_task
from tasks.kg import kg_task
from tasks.dataset import dataset_task
from tasks.train import train_task
from tasks.register import register_task

__all__ = ["ingest_task", "extract_task", "kg_task", "dataset_task", "train_task", "register_task"]
