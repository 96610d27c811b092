"""The one exception factory code raises, and the click group that turns it into a one-line exit."""

from __future__ import annotations

import click


class FactoryError(Exception):
    """A factory step cannot go on (a missing input, a stale cache, a check that failed); the message says why."""


class FactoryGroup(click.Group):
    """A click group whose commands end with `Error: <message>` and status 1 on a FactoryError, without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FactoryError as error:
            raise click.ClickException(str(error)) from error
