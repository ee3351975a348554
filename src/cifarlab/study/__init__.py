"""Studies of many runs: the runner and its backends (runner.py, ray_backend.py, cluster.py),
plans (forecast.py) and hyperparameter search (tune.py); what is made of finished runs is
cifarlab.reporting's."""
