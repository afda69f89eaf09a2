"""Numbers from scores and labels: pair sampling and pyeer-exact verification metrics with bootstrap CIs."""
