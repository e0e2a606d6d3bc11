"""Evaluation: labelled question sets in, retrieval metrics and reports out."""

from qa.eval.datasets import Dataset, DatasetError, Question, load_dataset
from qa.eval.options import EvalPlan, OptionError, plan_evaluation
from qa.eval.runner import ModeResult, evaluate, run_evaluation

__all__ = ["Dataset", "DatasetError", "EvalPlan", "ModeResult", "OptionError", "Question",
           "evaluate", "load_dataset", "plan_evaluation", "run_evaluation"]
