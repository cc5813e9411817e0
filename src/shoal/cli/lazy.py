"""Verbs that are imported only when they run.

Each verb module pulls in what it needs (the agent, the xDS generators, aiohttp, the
config model...), so importing them all made every `shoal ...` pay ~1.5 s at start-up.
:class:`LazyGroup` is the root command group: it knows each verb by a :class:`Verb` row
and imports the verb's module the first time the verb is looked up. The top-level
`--help` and a mistyped verb ("Did you mean ...?") look up every verb, so they import
them all; any other command line imports one verb module.

A loaded verb is registered on a throwaway Typer app exactly as ``app.command(...)``
or ``app.add_typer(...)`` would register it, so it becomes the same click command.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer import _click  # typer's own click: the types TyperGroup's methods use
    from typer.core import MarkupMode


@dataclass(frozen=True)
class Verb:
    """A top-level verb: its name, where it lives and the help panel it is listed in."""

    name: str
    target: str  # "module:attribute": a command function, or a typer.Typer of sub-verbs
    panel: str
    context_settings: str | None = None  # the name of a dict in the same module

    def load(self, markup: MarkupMode) -> _click.Command:
        module_name, _, attribute = self.target.partition(":")
        module = importlib.import_module(module_name)
        target = getattr(module, attribute)
        holder = typer.Typer(add_completion=False, rich_markup_mode=markup)
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=self.name, rich_help_panel=self.panel)
        else:
            settings = getattr(module, self.context_settings) if self.context_settings else None
            holder.command(self.name, rich_help_panel=self.panel,
                           context_settings=settings)(target)
        return typer.main.get_group(holder).commands[self.name]


class LazyGroup(TyperGroup):
    """A command group whose :attr:`verbs` are imported on first use. Commands
    registered on the Typer app itself (cheap ones) are listed before them."""

    verbs: ClassVar[Sequence[Verb]] = ()

    def _verb(self, name: str) -> Verb | None:
        return next((v for v in self.verbs if v.name == name), None)

    def list_commands(self, ctx: _click.Context) -> list[str]:
        eager = [name for name in self.commands if self._verb(name) is None]
        return eager + [v.name for v in self.verbs]

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and (verb := self._verb(cmd_name)) is not None:
            command = self.commands[cmd_name] = verb.load(self.rich_markup_mode)
        return command

    def resolve_command(
        self, ctx: _click.Context, args: list[str],
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        if args and args[0] not in self.list_commands(ctx):
            # typer suggests close matches ("Did you mean 'get'?") among the loaded
            # commands only: load them all for this (failing) command line.
            for name in self.list_commands(ctx):
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)
