"""Evaluation suites: IFEval (rule-checked instruction following) and friends."""
