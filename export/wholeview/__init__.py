"""The whole-view factory: a distilled student plus a native-resolution iqa head learnt from people (`python -m export.wholeview`)."""
