"""Orchestration (no pytest here): a plan's runs, their comparison and their outputs, per experiment.

It sits above run/, compare/ and report/, and is the one layer that calls all three.
"""
