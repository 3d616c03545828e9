"""Widgets of the live / recorded-run TUI; each shows one part of a run and is fed by the app
through reactive attributes (or, for the log and the tree, a method), never by I/O of its own."""
from lltrace.ui.widgets.budget_tree import BudgetTree
from lltrace.ui.widgets.event_log import EventLog
from lltrace.ui.widgets.help import HelpScreen
from lltrace.ui.widgets.latency_plot import LatencyPlot
from lltrace.ui.widgets.panels import FoldedPanels, GraphsPanel, KnobsPanel, MemoryPanel
from lltrace.ui.widgets.stats import StatsPanel

__all__ = ["BudgetTree", "EventLog", "FoldedPanels", "GraphsPanel", "HelpScreen", "KnobsPanel", "LatencyPlot", "MemoryPanel",
           "StatsPanel"]
