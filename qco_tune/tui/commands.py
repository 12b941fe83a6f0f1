"""Command palette entries: open a study, compare, start a run, export, help."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from qco_tune.tui.app import QcoTuneApp


class QcoCommands(Provider):
    """qco-tune's own commands in ``ctrl+p``."""

    def _commands(self) -> list[tuple[str, object, str]]:
        app: QcoTuneApp = self.app  # type: ignore[assignment]
        commands: list[tuple[str, object, str]] = [
            (f"Open study {name}", partial(app.open_study, name), "show its Pareto front and trials")
            for name in app.study_names
        ]
        commands.append(
            ("Start a study from a spec file", app.start_study_dialog, "runs qco-tune run in the background")
        )
        commands.append(("Help: keys and filters", app.action_help, "every key binding"))
        commands.append(("Toggle light/dark theme", app.action_toggle_theme, "ctrl+t"))
        screen = app.screen
        for name, label in (("export", "Export the selected trial"), ("detail", "Show the selected trial")):
            action = getattr(screen, f"action_{name}", None)
            if action is not None:
                commands.append((label, action, ""))
        compare = getattr(screen, "action_compare", None)
        if compare is not None:
            commands.append(("Compare the marked studies", compare, "mark studies with space first"))
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)  # type: ignore[arg-type]
