"""The time budget of a profiled window as an expandable tree: run -> block -> step -> layer ->
op region -> kernel class (the same Budget / Node structure `lltrace budget` prints).
Children are added when a node is first expanded: a full budget has thousands of nodes."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from lltrace.trace.budget import Budget, Node

_DIM_KINDS = {"class", "other", "unattributed"}


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.3f}" if v < 10 else f"{v:,.1f}"


def node_label(node: Node, metric: str, depth: int) -> Text:
    """`name  12.3 ms  45.6%  x3  p99 4.2`: the row `lltrace budget` prints, on one line."""
    style = "dim" if node.kind in _DIM_KINDS else ("bold" if depth <= 1 else "")
    label = Text(node.name, style=style + (" italic" if node.kind == "class" else ""))
    label.append(f"  {_ms(node.value(metric))} ms", style="cyan")
    label.append(f"  {node.share:.1%}", style="green" if node.share >= 0.2 else "")
    if node.count > 1:
        label.append(f"  x{node.count}", style="dim")
    inst = node.instances(metric)
    if inst and node.count > 1 and node.kind not in _DIM_KINDS:
        label.append(f"  p50 {_ms(inst['p50'])} p99 {_ms(inst['p99'])}", style="dim")
    if node.tflops is not None:
        label.append(f"  {node.tflops:,.0f} TFLOP/s", style="magenta")
    return label


class BudgetTree(Tree[Node]):
    DEFAULT_CSS = "BudgetTree { background: $surface; }"

    def __init__(self, **kwargs) -> None:
        super().__init__("no budget yet", **kwargs)
        self.budget: Budget | None = None
        self.show_root = True
        self.guide_depth = 3

    def show_message(self, message: str) -> None:
        """No budget to show (yet): say why."""
        self.budget = None
        self.clear()
        self.root.set_label(Text(message, style="dim"))
        self.root.data = None

    def show_budget(self, budget: Budget, expand_depth: int = 2) -> None:
        self.budget = budget
        self.clear()
        self.root.data = budget.tree
        self.root.set_label(node_label(budget.tree, budget.metric, 0))
        self._expand_to(self.root, expand_depth)

    def _add_children(self, tree_node: TreeNode[Node]) -> None:
        node = tree_node.data
        if node is None or tree_node.children or self.budget is None:
            return
        depth = _depth(tree_node) + 1
        for child in node.children:
            tree_node.add(node_label(child, self.budget.metric, depth), data=child,
                          allow_expand=bool(child.children))

    def _prepare(self, tree_node: TreeNode[Node]) -> None:
        """Children and grandchildren of a node being expanded: a child expanded right after
        (keys typed ahead) already has its children when its own expand event arrives."""
        self._add_children(tree_node)
        for child in tree_node.children:
            self._add_children(child)

    def _expand_to(self, tree_node: TreeNode[Node], depth: int, level: int = 0) -> None:
        self._prepare(tree_node)
        if level >= depth or not tree_node.children:
            return
        tree_node.expand()
        for child in tree_node.children:
            self._expand_to(child, depth, level + 1)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Node]) -> None:
        if event.node.tree is self:
            self._prepare(event.node)


def _depth(tree_node: TreeNode) -> int:
    d, n = 0, tree_node
    while n.parent is not None:
        d, n = d + 1, n.parent
    return d
