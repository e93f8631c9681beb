"""Runs: the durable journal of this node's runs and the cluster's run history."""

from daemon.runs.cluster import ClusterRun, ClusterState, ClusterView
from daemon.runs.journal import FINAL_STATES, STATES, RunJournal, RunRecord

__all__ = ["FINAL_STATES", "STATES", "ClusterRun", "ClusterState", "ClusterView", "RunJournal", "RunRecord"]
