"""What is made of finished runs: the study report (report.py), comparisons of any run folders
(compare.py), and the runs grouped by their settings that both use (groups.py). It reads what a
study writes (study.json, run folders), so it may import the study family; the study never imports it."""
