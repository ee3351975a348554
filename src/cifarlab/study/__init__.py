"""Studies of many runs: the runner and its backends (runner.py, ray_backend.py, cluster.py),
plans (forecast.py), hyperparameter search (tune.py), and what is made of finished runs
(report.py, compare.py)."""
