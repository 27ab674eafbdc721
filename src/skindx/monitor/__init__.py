"""Drift and performance monitoring of the served model (`python -m skindx.monitor`).

reference  the test split's image statistics, written into every package at package time
           (`reference.csv`, sealed by the card's sha256 list) beside evaluate's predictions.csv
window     a time window of the prediction log (serving.predlog's tables, SKINDX_PREDICTION_DB)
report     Evidently reports (input drift on the image statistics, prediction drift on the class
           mix) plus OOD rate and accuracy/BMA on the reviewed cases: report.html + summary.json

This package's import is light (numpy, pandas); Evidently and SQLAlchemy are imported only by the
modules that use them, so that the package stage can write the reference without them.
"""
