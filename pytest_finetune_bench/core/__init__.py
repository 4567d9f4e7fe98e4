"""The vocabulary every layer shares: the settings identity, the task output types and the run records.

Pure data and pure functions over it; nothing here imports another part of the package.
"""
