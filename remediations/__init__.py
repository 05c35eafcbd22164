"""The remediation receiver: Alertmanager's webhook target, whose every action passes
the guard kernel (dry-run, live re-checks, budgets, expiry) before it touches anything."""
