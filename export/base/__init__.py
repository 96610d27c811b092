"""The recipe of the bundled package perceptlite-base: `python -m export.base --help`."""
