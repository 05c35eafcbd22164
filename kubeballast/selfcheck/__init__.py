"""``kube-ballast selfcheck``: the seed's stability checklist as one read-only command.

The seed is a self-check list for large clusters; operators run it before a launch,
after an upgrade and in their platform's CI. Each item becomes a check
(:class:`~kubeballast.selfcheck.model.Check`) with a status, the evidence read and a
fix, one module per area, reusing the exporter's pure derivations and the etcd
operations so that a check and the matching alert can never disagree about what was
measured:

==========================  ===========================================================
module                      checks
==========================  ===========================================================
``scale``                   nodes, pods, containers, pods per node against the limits
``controlplane``            control-plane nodes against the seed's sizing table
``etcd``                    members and quorum, fsync latency, quota, fragmentation,
                            Events split, backups, a restore plan
``apiserver``               /readyz, congestion now, APF levels for heartbeats and
                            leader election
``controllermanager``       --use-service-account-credentials, work queue depths
``evictionguard``           the guard installed, evictions not paused
``alerts``                  runbooks, alerts loaded in Prometheus, the alert chain
``network``                 the network plugin's agents in every zone
``zones``                   workloads spread across zones
==========================  ===========================================================

:func:`~kubeballast.selfcheck.suite.run_selfcheck` runs them concurrently within a
deadline (``runner``), ``render`` turns the report into a table, JSON or HTML, and
``command`` is the ``kube-ballast selfcheck`` subcommand. This is the CLI layer: it
may import the exporter, the remediations and core, and nothing below imports it.
The package itself imports nothing, so registering the subcommand costs
``kube-ballast config check`` no start-up time.
"""
