"""Evaluation: labelled question sets in, retrieval metrics and reports out."""

from qa.eval.datasets import Dataset, DatasetError, Question, load_dataset
from qa.eval.runner import ModeResult, evaluate, run_evaluation

__all__ = ["Dataset", "DatasetError", "ModeResult", "Question", "evaluate", "load_dataset",
           "run_evaluation"]
