"""Trainables users copy. Installed as the ``rungflow.trainables`` entry points."""
