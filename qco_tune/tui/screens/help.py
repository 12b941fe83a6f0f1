"""The help screen: every key, per screen, and the filter syntax."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# qco-tune

**Everywhere** — `?` this help · `ctrl+p` command palette (open a study, compare, start a run, theme)
· `ctrl+t` light/dark theme · `q` quit · `escape` back

**Studies** — `enter` open · `space` mark · `c` compare the marked studies · `s` sort (or click a header)
· `n` start a study from a spec file · `x` stop a study started here

**Study** — plot (latency against peak memory, the budget as a line):
`●` Pareto front (feasible, joined) · `•` dominated · `×` over budget · `✗` failed (top strip, at the
predicted memory) · `◆` seeded guide recipe (labelled). Click a point or move with the arrow keys; the
table follows, and the other way round. `l` log scale · `p` focus the plot · `tab` next pane.

Table: `enter` trial details · `s` sort column (`S` reverse, or click a header) · `e` export · `t` cycle
the state filter · `/` filter · `c` compare with the other studies of the same model · `x` stop the
run started here · `r` reload.
The study reloads by itself when trials finish (also when another process or host runs it).

**Filter** words, all must match: `failed`, `state:front,dominated`, `feasible`; knobs as
`compile=regional`, `offload!=none`, `transformer=bnb_nf4`, `quant=torchao_fp8dq` (any component),
`recipe=reference`; any other word is searched in the configuration.

**Trial** — `←`/`→` previous/next trial · `e` export

**Export** — `w` write to the path (`o` to edit it; write twice to overwrite) · `y` copy to the
clipboard · `f` python / json / toml. The text is what `qco-tune export STUDY --trial N` prints.

**Compare** — one marker per study, each front joined; the table lines up the same configuration
across studies with its speed-up over the first study.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def __init__(self) -> None:
        super().__init__()
        # Markdown parses in a thread and mounts its blocks later; tests wait for this flag.
        self.rendered = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)

    def on_markdown_table_of_contents_updated(self, _: Markdown.TableOfContentsUpdated) -> None:
        self.rendered = True
