"""The deployment tree: stages as data, the runner, the report.

Example:

>>> import collabopt.tree as tree
>>> [s.name for s in tree.default_stages()][:4]
['baseline', 'pruned', 'clustered', 'qat']
"""

from collabopt.tree.report import NodeResult, TreeReport, pareto_front
from collabopt.tree.runner import default_compile, run
from collabopt.tree.stages import Stage, Targets, check_stages, default_stages

__all__ = ["NodeResult", "Stage", "Targets", "TreeReport", "check_stages", "default_compile", "default_stages", "pareto_front", "run"]
